import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterAll, expect, it } from "vitest";
import { WorkerService } from "../../src/gen/runnerline/v1/worker_pb.js";
import { RolloutService } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { eventually, freePort } from "../polling.js";
import { type CliProcess, startCli, stopAll } from "./processes.js";

/**
 * A stopping server ends the calls that would otherwise hold it open — a
 * browser's WatchWorkers over Connect (HTTP/1.1, kept alive), the same over
 * gRPC, a grpc.health.v1 Watch and a WaitRollouts long poll — as its drain
 * starts, each with a status the client can act on, and exits at once.
 */
const processes: CliProcess[] = [];

afterAll(() => stopAll(processes));

/** Reads a server stream to its end; resolves with how it ended. */
async function ending(stream: AsyncIterable<unknown>, started: () => void): Promise<ConnectError | "ok"> {
  try {
    for await (const _ of stream) started();
    return "ok";
  } catch (error) {
    return ConnectError.from(error);
  }
}

it("SIGTERM ends WatchWorkers (Connect and gRPC), health watches and WaitRollouts at once, and the server exits promptly", async () => {
  const [grpcPort, httpPort] = [await freePort(), await freePort()];
  const server = startCli(["serve", "--store", "memory", "--grpc-addr", `127.0.0.1:${grpcPort}`, "--http-addr", `127.0.0.1:${httpPort}`]);
  processes.push(server);
  await server.waitFor("serving gRPC");

  let watching = 0;
  const seen = () => watching++;
  // The web page's transport: Connect over HTTP/1.1, whose connections are kept alive.
  const browser = createClient(WorkerService, createConnectTransport({ baseUrl: `http://127.0.0.1:${httpPort}`, httpVersion: "1.1" }));
  const grpcClient = createClient(WorkerService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${grpcPort}` }));
  const rollouts = createClient(RolloutService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${grpcPort}` }));
  const overHttp = ending(browser.watchWorkers({ changesOnly: true }), seen);
  const overGrpc = ending(grpcClient.watchWorkers({ changesOnly: true }), seen);
  const { rollout } = await rollouts.enqueueRollout({});
  const waiting = rollouts.waitRollouts({ rolloutIds: [rollout!.rolloutId], timeout: durationFromMs(60_000) }).then(
    () => "answered",
    (error: unknown) => ConnectError.from(error),
  );
  const health = new grpc.Client(`127.0.0.1:${grpcPort}`, grpc.credentials.createInsecure());
  const healthWatch = health.makeServerStreamRequest(
    "/grpc.health.v1.Health/Watch",
    (value: Buffer) => value,
    (bytes: Buffer) => bytes,
    Buffer.alloc(0),
  );
  const healthEnd = new Promise<grpc.StatusObject>((resolve) => healthWatch.on("status", resolve));
  healthWatch.on("data", seen);
  healthWatch.on("error", () => undefined);
  // All three watches have sent their first message (changes_only: "subscribed"; health: SERVING).
  await eventually(async () => watching, (n) => n === 3);

  const signalled = Date.now();
  server.child.kill("SIGTERM");
  const code = await server.exited;
  const tookMs = Date.now() - signalled;
  console.log(`server exited ${tookMs} ms after SIGTERM`);
  expect(code, server.output()).toBe(0);
  const shuttingDown = { code: Code.Unavailable, rawMessage: expect.stringMatching(/^the server is shutting down/) as unknown };
  expect(await overHttp).toMatchObject(shuttingDown);
  expect(await overGrpc).toMatchObject(shuttingDown);
  expect(await waiting).toMatchObject(shuttingDown);
  expect((await healthEnd).code).toBe(grpc.status.OK);
  health.close();
  // Before, the open streams held it until the listeners' close graces ran out (4-5 s); now nothing does (~0.1 s).
  expect(tookMs).toBeLessThan(2_000);
}, 60_000);
