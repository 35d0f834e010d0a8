import http from "node:http";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRunnerlineClients } from "../../src/client/clients.js";
import { type RunningServer, startServer } from "../../src/server/app.js";

/**
 * What a plain HTTP client (curl, fetch, a proxy) gets from the HTTP port when
 * the request is wrong in a way connect-node answers by itself: a status it
 * understands and a Connect error body saying what to send instead.
 */
let server: RunningServer;
const LIMIT = 1024 * 1024;

beforeAll(async () => {
  server = await startServer({ grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", store: "memory", httpMaxMessageBytes: LIMIT, log: () => {} });
});

afterAll(() => server.close());

/** A raw POST: exactly these headers (Node's fetch adds a Content-Type of its own). */
function post(path: string, body: string, headers: Record<string, string>) {
  return new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
    const request = http.request({ host: "127.0.0.1", port: server.httpPort, path, method: "POST", headers: { ...headers, "content-length": Buffer.byteLength(body) } });
    request.on("error", reject);
    request.on("response", (response) => {
      let text = "";
      response.setEncoding("utf8").on("data", (chunk: string) => (text += chunk));
      response.on("end", () => resolve({ status: response.statusCode!, headers: response.headers, body: text }));
    });
    request.end(body);
  });
}

const json = { "content-type": "application/json" };

describe("the HTTP port's answers to requests connect-node refuses by itself", () => {
  it("no Content-Type: 415 with Accept-Post and a Connect error naming the accepted types", async () => {
    const answer = await post("/runnerline.v1.RolloutService/GetRollout", '{"rolloutId":"x"}', {});
    expect(answer.status).toBe(415);
    expect(answer.headers["content-type"]).toBe("application/json");
    expect(answer.headers["accept-post"]).toBe("application/json, application/proto, application/grpc-web+proto, application/grpc-web-text+proto");
    const error = JSON.parse(answer.body) as { code: string; message: string };
    expect(error.code).toBe("invalid_argument");
    expect(error.message).toMatch(/^no Content-Type: this unary method takes application\/json, application\/proto, /);
    expect(error.message).toContain("gRPC port");
  });

  it("a Content-Type of the wrong kind: 415 naming it and the streaming types", async () => {
    const unary = await post("/runnerline.v1.RolloutService/GetRollout", "{}", { "content-type": "text/plain" });
    expect(unary.status).toBe(415);
    expect((JSON.parse(unary.body) as { message: string }).message).toMatch(/^Content-Type "text\/plain": this unary method takes application\/json/);
    const stream = await post("/runnerline.v1.WorkerService/WatchWorkers", "{}", json);
    expect(stream.status).toBe(415);
    expect((JSON.parse(stream.body) as { message: string }).message).toMatch(
      /^Content-Type "application\/json": this streaming method takes application\/connect\+json, application\/connect\+proto, /,
    );
  });

  it("a body over the limit: 413 (not 429), code resource_exhausted, the limit named", async () => {
    const answer = await post("/runnerline.v1.RolloutService/EnqueueRollout", JSON.stringify({ input: "x".repeat(2 * LIMIT) }), json);
    expect(answer.status).toBe(413);
    // Answered before the body was read: the connection is not reused.
    expect(answer.headers.connection).toBe("close");
    const error = JSON.parse(answer.body) as { code: string; message: string };
    expect(error).toEqual({ code: "resource_exhausted", message: `request message of ${2 * LIMIT + 12} bytes is larger than this port's limit of ${LIMIT} bytes` });
    // A Connect client reads the code from the body: still RESOURCE_EXHAUSTED.
    const client = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${server.httpPort}`, transport: "connect" });
    const refused = await client.rollouts.enqueueRollout({ resourcesId: "y".repeat(2 * LIMIT) }).catch((e: unknown) => ConnectError.from(e));
    expect(refused).toMatchObject({ code: Code.ResourceExhausted });
  });

  it('a Duration that is not a string: the field named, and the form ("30s")', async () => {
    const top = await post("/runnerline.v1.RolloutService/WaitRollouts", JSON.stringify({ rolloutIds: ["a"], timeout: 30 }), json);
    expect(top.status).toBe(400);
    expect(JSON.parse(top.body)).toEqual({
      code: "invalid_argument",
      message: 'timeout: expected a duration string such as "30s" or "1.5s" (seconds with an "s"), got 30',
    });
    const nested = await post("/runnerline.v1.RolloutService/EnqueueRollout", JSON.stringify({ config: { retryDelay: "2 minutes" } }), json);
    expect(nested.status).toBe(400);
    expect((JSON.parse(nested.body) as { message: string }).message).toBe(
      'config.retry_delay: expected a duration string such as "30s" or "1.5s" (seconds with an "s"), got "2 minutes"',
    );
    const fine = await post("/runnerline.v1.RolloutService/EnqueueRollout", JSON.stringify({ config: { timeout: "30s", retryDelay: "1.5s" } }), json);
    expect(fine.status).toBe(200);
  });
});
