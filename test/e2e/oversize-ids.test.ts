/**
 * Ids and names far longer than any the server has are refused before the
 * lookup, and no error message repeats more than a bounded part of what the
 * caller sent: a status message travels in a trailer, within the client's
 * metadata limit, and one that exceeds it fails calls beside it on the same
 * connection.
 */
import { create, type DescService } from "@bufbuild/protobuf";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { grpcServiceDefinition } from "../../src/common/grpc-definition.js";
import { AttemptService } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutService } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { WorkerService } from "../../src/gen/runnerline/v1/worker_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { connectDriver } from "./drivers.js";

const HUGE = "x".repeat(100_000);
/** Far below grpc-js's default 8 KiB metadata limit, far above any message the server means to send. */
const MESSAGE_BOUND = 1_000;

let server: RunningServer;
let channel: grpc.Channel;
type Generic = grpc.Client & Record<string, (...args: unknown[]) => grpc.ClientUnaryCall>;
let workers: Generic;
let rollouts: Generic;
let attempts: Generic;
let raw: grpc.Client;

beforeAll(async () => {
  server = await startServer({ grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", store: "memory", log: () => {} });
  const address = `127.0.0.1:${server.grpcPort}`;
  // One channel, so every call below shares one HTTP/2 connection.
  channel = new grpc.Channel(address, grpc.credentials.createInsecure(), {});
  const make = (service: DescService) => {
    const client = new (grpc.makeGenericClientConstructor(grpcServiceDefinition(service), service.name))(
      address,
      grpc.credentials.createInsecure(),
      { channelOverride: channel },
    ) as Generic;
    services.set(client, service);
    return client;
  };
  workers = make(WorkerService);
  rollouts = make(RolloutService);
  attempts = make(AttemptService);
  raw = new grpc.Client(address, grpc.credentials.createInsecure(), { channelOverride: channel });
});

afterAll(async () => {
  channel?.close();
  await server?.close();
});

const services = new Map<Generic, DescService>();

function call(client: Generic, method: string, request: object): Promise<{ code: number; details: string }> {
  const input = services.get(client)?.methods.find((m) => m.localName === method)?.input;
  if (input === undefined) throw new Error(`no method ${method}`);
  return new Promise((resolve) => {
    client[method]?.(create(input, request as never), (error: grpc.ServiceError | null) => resolve({ code: error?.code ?? 0, details: error?.details ?? "" }));
  });
}

/** grpc.health.v1.Health/Check, encoded by hand: field 1, the service name. */
function healthCheck(service: string): Promise<{ code: number; details: string }> {
  const request = Buffer.from(new BinaryWriter().tag(1, 2).string(service).finish());
  return new Promise((resolve) => {
    raw.makeUnaryRequest("/grpc.health.v1.Health/Check", (b: Buffer) => b, (b: Buffer) => b, request, (error) =>
      resolve({ code: error?.code ?? 0, details: error?.details ?? "" }),
    );
  });
}

const oversize: [string, () => Promise<{ code: number; details: string }>][] = [
  ["GetWorker", () => call(workers, "getWorker", { workerId: HUGE })],
  ["GetRollout", () => call(rollouts, "getRollout", { rolloutId: HUGE })],
  ["CancelRollout", () => call(rollouts, "cancelRollout", { rolloutId: HUGE })],
  ["WaitRollouts", () => call(rollouts, "waitRollouts", { rolloutIds: ["ro-1", HUGE] })],
  ["GetAttempt", () => call(attempts, "getAttempt", { attemptId: HUGE })],
  ["UpdateAttempt", () => call(attempts, "updateAttempt", { attemptId: HUGE })],
  ["ListAttempts filter", () => call(attempts, "listAttempts", { rolloutId: HUGE })],
  ["ListRollouts order_by", () => call(rollouts, "listRollouts", { orderBy: HUGE })],
  ["Health/Check service name", () => healthCheck(HUGE)],
];

describe("oversize ids and names", () => {
  it.each(oversize)("%s: INVALID_ARGUMENT with a bounded message", async (_, send) => {
    const { code, details } = await send();
    expect(grpc.status[code]).toBe("INVALID_ARGUMENT");
    expect(details.length).toBeLessThan(MESSAGE_BOUND);
  });

  it("leave the connection usable: 200 small calls beside them all succeed", async () => {
    await call(workers, "sendHeartbeat", { workerId: "known" });
    const small: Promise<{ code: number; details: string }>[] = [];
    const large: Promise<unknown>[] = [];
    for (let i = 0; i < 200; i++) {
      small.push(call(workers, "getWorker", { workerId: "known" }));
      if (i % 10 === 0) large.push(...oversize.map(([, send]) => send()));
    }
    await Promise.all(large);
    const failed = (await Promise.all(small)).filter((result) => result.code !== 0);
    expect(failed).toEqual([]);
  });

  it("ids up to 128 characters are still looked up (NOT_FOUND, not refused)", async () => {
    const { code, details } = await call(workers, "getWorker", { workerId: "y".repeat(128) });
    expect(grpc.status[code]).toBe("NOT_FOUND");
    expect(details.length).toBeLessThan(MESSAGE_BOUND);
  });
});

describe("oversize attempt ids on a runner session", () => {
  it("a heartbeat listing one is Rejected with a bounded message, and the session goes on", async () => {
    const driver = connectDriver(`127.0.0.1:${server.grpcPort}`);
    const session = driver.session();
    session.send({ kind: "hello", workerId: "long-ids" });
    await session.nextOf("welcome");
    session.send({ kind: "heartbeat", attemptIds: [HUGE], sequence: 1 });
    const rejected = await session.nextOf("rejected");
    expect(grpc.status[rejected.code]).toBe("INVALID_ARGUMENT");
    expect(rejected.message.length).toBeLessThan(MESSAGE_BOUND);
    session.send({ kind: "heartbeat", attemptIds: [], sequence: 2 });
    expect((await session.nextOf("heartbeat_ack")).sequence).toBe(2);
    session.close();
    driver.close();
  });

  it("a Hello claiming one ends the stream with INVALID_ARGUMENT", async () => {
    const driver = connectDriver(`127.0.0.1:${server.grpcPort}`);
    const session = driver.session();
    session.send({ kind: "hello", workerId: "long-claim", runningAttemptIds: [HUGE] });
    const ended = await session.next().then(
      (message) => `message ${message.kind}`,
      (error: unknown) => String(error),
    );
    expect(ended).toMatch(/invalid_argument/);
    expect(ended.length).toBeLessThan(MESSAGE_BOUND);
    session.close();
    driver.close();
  });
});
