import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, describe, expect, it } from "vitest";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createRunnerlineClients } from "../../src/client/clients.js";
import { create } from "@bufbuild/protobuf";
import { RunnerService, type SessionRequest, SessionRequestSchema } from "../../src/gen/runnerline/v1/runner_pb.js";
import { type CliProcess, startCli, stopAll } from "../liveness/processes.js";
import { eventually, freePort } from "../polling.js";
import { DEFAULT_ENTRIES, TOKENS, writeAuthFile } from "./tokens.js";

const processes: CliProcess[] = [];
afterAll(() => stopAll(processes));

describe("SIGHUP reloads the auth file", () => {
  it("adds and revokes tokens for new calls while an open session keeps running", { timeout: 60_000 }, async () => {
    const authFile = writeAuthFile();
    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    const server = startCli(["serve", "--grpc-addr", `127.0.0.1:${grpcPort}`, "--http-addr", `127.0.0.1:${httpPort}`, "--store", "memory"], {
      RUNNERLINE_AUTH_FILE: authFile,
    });
    processes.push(server);
    await server.waitFor("serving gRPC", 30_000);
    const baseUrl = `http://127.0.0.1:${grpcPort}`;
    const clients = (token: string) => createRunnerlineClients({ baseUrl, security: { token } });

    // A runner session opened with the token that the reload will revoke.
    const requests = pushable<SessionRequest>();
    const runner = createClient(RunnerService, createGrpcTransport({ baseUrl }));
    const responses = runner.session(requests.iterable, { headers: { authorization: `Bearer ${TOKENS.runner}` } })[Symbol.asyncIterator]();
    requests.push(create(SessionRequestSchema, { message: { case: "hello", value: { workerId: "gpu-1" } } }));
    expect((await responses.next()).value?.message.case).toBe("welcome");

    const newToken = "a-token-added-later";
    await expect(clients(newToken).workers.listWorkers({})).rejects.toMatchObject({ code: Code.Unauthenticated });

    // Add an operator token; drop the runner's.
    writeAuthFile(
      [...DEFAULT_ENTRIES.filter((e) => e.role !== "runner"), { name: "late-dashboard", role: "operator", token: newToken }],
      authFile,
    );
    server.child.kill("SIGHUP");
    await server.waitFor("auth: reloaded 3 tokens");
    await eventually(
      () => clients(newToken).workers.listWorkers({}).then(() => "ok", (e) => ConnectError.from(e).code),
      (result) => result === "ok",
    );
    const revoked = await clients(TOKENS.runner).workers.sendHeartbeat({ workerId: "gpu-1" }).catch(ConnectError.from);
    expect(revoked).toMatchObject({ code: Code.Unauthenticated });

    // The session opened before the reload is still served.
    requests.push(create(SessionRequestSchema, { message: { case: "heartbeat", value: { sequence: 7n } } }));
    const ack = await responses.next();
    expect(ack.value?.message).toMatchObject({ case: "heartbeatAck", value: { sequence: 7n } });

    // A broken file keeps the tokens in force.
    writeAuthFile([{ name: "x", role: "root", token: "y" }], authFile);
    server.child.kill("SIGHUP");
    await server.waitFor("auth: reload failed, keeping the previous 3 tokens");
    await clients(newToken).workers.listWorkers({});

    requests.end();
    server.child.kill("SIGTERM");
    expect(await server.exited).toBe(0);
  });
});

/** An async iterable fed by push(), for the request side of a bidi stream. */
function pushable<T>() {
  const queue: T[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  return {
    push(item: T) {
      queue.push(item);
      wake?.();
    },
    end() {
      ended = true;
      wake?.();
    },
    iterable: (async function* () {
      for (;;) {
        if (queue.length > 0) yield queue.shift() as T;
        else if (ended) return;
        else await new Promise<void>((resolve) => (wake = resolve));
      }
    })(),
  };
}
