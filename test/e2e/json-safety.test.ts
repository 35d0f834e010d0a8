/**
 * Values the protobuf binary format can carry and the JSON mapping cannot
 * write (NaN, a Value with no kind, out-of-range Durations and Timestamps) are
 * refused on the way in over gRPC with INVALID_ARGUMENT naming the field, so
 * that every later read over Connect JSON still works.
 */
import { create } from "@bufbuild/protobuf";
import { ListValueSchema, type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRunnerlineClients, type RunnerlineClients } from "../../src/client/clients.js";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RunnerService, type SessionRequest, type SessionResponse } from "../../src/gen/runnerline/v1/runner_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";

let server: RunningServer;
let grpc: RunnerlineClients;
let http: RunnerlineClients;

beforeAll(async () => {
  server = await startServer({ grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", store: "memory", log: () => {} });
  grpc = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${server.grpcPort}` });
  http = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${server.httpPort}`, transport: "connect" });
});

afterAll(async () => {
  await server?.close();
});

const number = (value: number): Value => create(ValueSchema, { kind: { case: "numberValue", value } });
const list = (...values: Value[]): Value => create(ValueSchema, { kind: { case: "listValue", value: create(ListValueSchema, { values }) } });
const nested = (levels: number): Value => (levels === 0 ? number(1) : list(nested(levels - 1)));
const seconds = (s: bigint, nanos = 0) => ({ seconds: s, nanos });

async function dequeueOne(workerId: string) {
  await grpc.rollouts.enqueueRollout({});
  for (;;) {
    const { attempt } = await grpc.rollouts.dequeueRollout({ workerId });
    if (attempt === undefined) throw new Error("queue unexpectedly empty");
    if (attempt.workerId === workerId) return attempt;
  }
}

/** Each call must be refused with INVALID_ARGUMENT and a message that starts with the field's path. */
const cases: [string, () => Promise<unknown>, string][] = [
  ["input NaN", () => grpc.rollouts.enqueueRollout({ input: number(NaN) }), "input:"],
  ["input Infinity in a list", () => grpc.rollouts.enqueueRollout({ input: list(number(1), number(Infinity)) }), "input[1]:"],
  ["input list holding an empty Value", () => grpc.rollouts.enqueueRollout({ input: list(create(ValueSchema)) }), "input[0]:"],
  ["input with no kind", () => grpc.rollouts.enqueueRollout({ input: create(ValueSchema) }), "input:"],
  ["input nested 40 levels", () => grpc.rollouts.enqueueRollout({ input: nested(40) }), "input"],
  ["metadata NaN", () => grpc.rollouts.enqueueRollout({ metadata: { score: NaN } }), "metadata.score:"],
  ["metadata -Infinity deep down", () => grpc.rollouts.enqueueRollout({ metadata: { a: [{ b: -Infinity }] } }), "metadata.a[0].b:"],
  ["config.timeout beyond 10,000 years", () => grpc.rollouts.enqueueRollout({ config: { timeout: seconds(315_576_000_001n) } }), "config.timeout:"],
  ["config.deadline sign mismatch", () => grpc.rollouts.enqueueRollout({ config: { deadline: seconds(1n, -1) } }), "config.deadline:"],
  ["config.queue_timeout nanos = 1e9", () => grpc.rollouts.enqueueRollout({ config: { queueTimeout: seconds(0n, 1_000_000_000) } }), "config.queue_timeout:"],
  ["config.deadline negative", () => grpc.rollouts.enqueueRollout({ config: { deadline: seconds(-5n) } }), "config.deadline"],
  ["batch entry", () => grpc.rollouts.enqueueRollouts({ requests: [{}, { input: number(NaN) }] }), "requests[1].input:"],
  ["WaitRollouts timeout beyond range", () => grpc.rollouts.waitRollouts({ rolloutIds: ["ro-x"], timeout: seconds(-315_576_000_001n) }), "timeout:"],
  ["collect_time nanos = 1e9", () => grpc.workers.sendHeartbeat({ workerId: "w-ts1", snapshot: { collectTime: seconds(0n, 1_000_000_000) } }), "snapshot.collect_time:"],
  ["collect_time year 10000", () => grpc.workers.sendHeartbeat({ workerId: "w-ts2", snapshot: { collectTime: seconds(253_402_300_800n) } }), "snapshot.collect_time:"],
  ["collect_time year 0", () => grpc.workers.sendHeartbeat({ workerId: "w-ts3", snapshot: { collectTime: seconds(-62_135_596_801n) } }), "snapshot.collect_time:"],
  ["extra_stats NaN", () => grpc.workers.sendHeartbeat({ workerId: "w-es", extraStats: { load: NaN } }), "extra_stats.load:"],
  ["attempt metadata Infinity", async () => {
    const attempt = await dequeueOne("w-meta");
    return grpc.attempts.updateAttempt({ attemptId: attempt.attemptId, status: AttemptStatus.RUNNING, metadata: { reward: Infinity } });
  }, "metadata.reward:"],
];

describe("JSON-unsafe values sent over gRPC", () => {
  it.each(cases)("%s → INVALID_ARGUMENT naming the field", async (_, call, path) => {
    const error = await call().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error, "the call was accepted").toBeInstanceOf(ConnectError);
    expect(Code[(error as ConnectError).code]).toBe("InvalidArgument");
    expect((error as ConnectError).rawMessage.startsWith(path), (error as ConnectError).rawMessage).toBe(true);
  });

  it("on a runner session, a heartbeat with a bad collect_time is Rejected naming the field; the stream stays", async () => {
    const runners = createClient(RunnerService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${server.grpcPort}` }));
    const outgoing: SessionRequest[] = [];
    let push: (() => void) | undefined;
    const abort = new AbortController();
    async function* requests() {
      for (;;) {
        while (outgoing.length > 0) yield outgoing.shift() as SessionRequest;
        await new Promise<void>((resolve) => (push = resolve));
      }
    }
    const send = (message: SessionRequest["message"]) => {
      outgoing.push({ message } as SessionRequest);
      push?.();
    };
    const responses = runners.session(requests(), { signal: abort.signal })[Symbol.asyncIterator]();
    const next = async (): Promise<SessionResponse> => (await responses.next()).value as SessionResponse;
    send({ case: "hello", value: { workerId: "w-session", capacity: 1 } as never });
    expect((await next()).message.case).toBe("welcome");
    send({ case: "heartbeat", value: { sequence: 1n, snapshot: { collectTime: seconds(0n, -1) } } as never });
    const rejected = (await next()).message;
    expect(rejected.case).toBe("rejected");
    expect(rejected.case === "rejected" && rejected.value.code).toBe(Code.InvalidArgument);
    expect(rejected.case === "rejected" && rejected.value.message).toMatch(/^heartbeat\.snapshot\.collect_time:/);
    send({ case: "heartbeat", value: { sequence: 2n } as never });
    const ack = (await next()).message;
    expect(ack.case === "heartbeatAck" && ack.value.sequence).toBe(2n);
    abort.abort();
  });

  it("leaves every record readable over Connect JSON", async () => {
    // As curl reads them: Connect's JSON form, where NaN or a Value with no kind cannot be written.
    const read = async (method: string, body: object) => {
      const response = await fetch(`http://127.0.0.1:${server.httpPort}/runnerline.v1.${method}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      return `${method} ${response.status} ${response.status === 200 ? "" : await response.text()}`;
    };
    expect(await read("RolloutService/ListRollouts", { pageSize: 1000 })).toBe("RolloutService/ListRollouts 200 ");
    expect(await read("WorkerService/ListWorkers", { pageSize: 1000 })).toBe("WorkerService/ListWorkers 200 ");
    expect(await read("AttemptService/ListAttempts", { pageSize: 1000 })).toBe("AttemptService/ListAttempts 200 ");
  });

  it("still accepts the edges of every range", async () => {
    await grpc.rollouts.enqueueRollout({
      input: list(number(Number.MAX_VALUE), nested(20), create(ValueSchema, { kind: { case: "nullValue", value: 0 } })),
      metadata: { ok: -0, big: 1e308 },
      config: { timeout: seconds(315_576_000_000n, 999_999_999), deadline: seconds(0n, 1), queueTimeout: seconds(10n) },
    });
    await grpc.workers.sendHeartbeat({ workerId: "w-edges", snapshot: { collectTime: seconds(253_402_300_799n, 999_999_999) } });
    await grpc.workers.sendHeartbeat({ workerId: "w-edges", snapshot: { collectTime: seconds(-62_135_596_800n) } });
    const { worker } = await http.workers.getWorker({ workerId: "w-edges" });
    expect(worker?.snapshot?.collectTime?.seconds).toBe(-62_135_596_800n);
  });
});
