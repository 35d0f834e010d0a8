import type { MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRunnerlineClients, type RunnerlineClients } from "../../src/client/clients.js";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { type RolloutConfigSchema, RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { msOf } from "../../src/server/domain/time.js";
import { tempDatabasePath } from "../harness.js";
import { connectDriver } from "./drivers.js";

let server: RunningServer;
let clients: RunnerlineClients;

beforeAll(async () => {
  server = await startServer({ grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", store: "memory", log: () => {} });
  clients = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${server.grpcPort}` });
});

afterAll(async () => {
  await server.close();
});

const config = (fields: MessageInitShape<typeof RolloutConfigSchema>) => fields;

async function refusal(call: Promise<unknown>): Promise<ConnectError> {
  const error = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ConnectError);
  return error as ConnectError;
}

describe("new RolloutConfig fields are validated, naming the field (INVALID_ARGUMENT)", () => {
  const cases: [string, MessageInitShape<typeof RolloutConfigSchema>, RegExp][] = [
    ["negative retry_delay", config({ retryDelay: durationFromMs(-1) }), /config.retry_delay must not be negative/],
    ["negative max_retry_delay", config({ maxRetryDelay: durationFromMs(-1) }), /config.max_retry_delay must not be negative/],
    [
      "max_retry_delay shorter than retry_delay",
      config({ retryDelay: durationFromMs(2_000), maxRetryDelay: durationFromMs(1_000) }),
      /config.max_retry_delay must not be shorter than config.retry_delay/,
    ],
    ["coefficient below 1", config({ retryBackoffCoefficient: 0.5 }), /config.retry_backoff_coefficient must be at least 1/],
    ["coefficient NaN", config({ retryBackoffCoefficient: Number.NaN }), /config.retry_backoff_coefficient/],
    ["label key with a space", config({ requiredLabels: { "bad key": "x" } }), /config.required_labels key "bad key"/],
    ["empty label key", config({ requiredLabels: { "": "x" } }), /config.required_labels key ""/],
  ];
  it.each(cases)("%s", async (_, fields, message) => {
    const error = await refusal(clients.rollouts.enqueueRollout({ config: fields }));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toMatch(message);
  });

  it("in a batch, the entry is named too", async () => {
    const error = await refusal(clients.rollouts.enqueueRollouts({ requests: [{}, { config: config({ retryDelay: durationFromMs(-5) }) }] }));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toMatch(/requests\[1\].config.retry_delay/);
  });

  it("a malformed finish_time is refused", async () => {
    const { rollout } = await clients.rollouts.enqueueRollout({});
    const { attempt } = await clients.rollouts.dequeueRollout({ workerId: "w-finish" });
    expect(attempt?.rolloutId).toBe(rollout!.rolloutId);
    const error = await refusal(
      clients.attempts.updateAttempt({ attemptId: attempt!.attemptId, status: AttemptStatus.SUCCEEDED, finishTime: { seconds: 0n, nanos: -1 } }),
    );
    expect(error.code).toBe(Code.InvalidArgument);
    // The well-known-type check on every request names the field and what is wrong with it.
    expect(error.rawMessage).toMatch(/^finish_time: a timestamp.s nanos must be within/);
    const finishedAt = msOf(attempt!.createTime)!;
    const { attempt: done } = await clients.attempts.updateAttempt({
      attemptId: attempt!.attemptId,
      status: AttemptStatus.SUCCEEDED,
      finishTime: timestampFromMs(finishedAt),
    });
    expect(msOf(done!.endTime)).toBe(finishedAt);
  });
});

describe("routing over the wire", () => {
  it("ListRollouts unroutable_only finds the queued rollouts no connected runner can take; priority sorts", async () => {
    const driver = connectDriver(`127.0.0.1:${server.grpcPort}`);
    const session = driver.session();
    session.send({ kind: "hello", workerId: "w-plain" });
    await session.nextOf("welcome");
    const { rollouts } = await clients.rollouts.enqueueRollouts({
      requests: [
        { rolloutId: "needs-gpu", priority: 3, config: { requiredLabels: { gpu: "h100" } } },
        { rolloutId: "needs-nothing", priority: 7 },
      ],
    });
    expect(rollouts.map((r) => r.priority)).toEqual([3, 7]);
    const unroutable = await clients.rollouts.listRollouts({ unroutableOnly: true });
    expect(unroutable.rollouts.map((r) => r.rolloutId)).toEqual(["needs-gpu"]);
    expect(server.coordinator.unroutableCount()).toBe(1);
    const byPriority = await clients.rollouts.listRollouts({ statuses: [RolloutStatus.QUEUING], orderBy: "priority desc" });
    expect(byPriority.rollouts.map((r) => r.rolloutId).slice(0, 2)).toEqual(["needs-nothing", "needs-gpu"]);
    session.close();
    driver.close();
  });

  it("ReleaseWorker: NOT_FOUND for an unknown worker, FAILED_PRECONDITION for one not quarantined", async () => {
    expect((await refusal(clients.workers.releaseWorker({ workerId: "w-nobody" }))).code).toBe(Code.NotFound);
    await clients.workers.sendHeartbeat({ workerId: "w-free" });
    const error = await refusal(clients.workers.releaseWorker({ workerId: "w-free" }));
    expect(error.code).toBe(Code.FailedPrecondition);
    expect(error.rawMessage).toMatch(/w-free is not quarantined/);
    expect((await refusal(clients.workers.releaseWorker({}))).code).toBe(Code.InvalidArgument);
  });
});

describe("on SQLite, the new fields and the queue order survive a restart", () => {
  it("priority, labels and next_attempt_time come back; the queue resumes in its order", async () => {
    const path = tempDatabasePath();
    const options = { grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", store: `sqlite:${path}`, log: () => {} };
    const first = await startServer(options);
    const before = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${first.grpcPort}` });
    await before.rollouts.enqueueRollouts({
      requests: [
        { rolloutId: "low", priority: 0 },
        { rolloutId: "labelled", priority: 5, config: { requiredLabels: { pool: "a" } } },
        { rolloutId: "high", priority: 5 },
      ],
    });
    await first.close();

    const second = await startServer(options);
    try {
      const after = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${second.grpcPort}` });
      const { rollout } = await after.rollouts.getRollout({ rolloutId: "labelled" });
      expect(rollout).toMatchObject({ priority: 5, config: { requiredLabels: { pool: "a" } } });
      const order: string[] = [];
      for (let i = 0; i < 3; i++) order.push((await after.rollouts.dequeueRollout({ workerId: "w-unary" })).rollout?.rolloutId ?? "");
      expect(order).toEqual(["high", "low", ""]);
    } finally {
      await second.close();
    }
  });
});
