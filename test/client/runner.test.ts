import { once } from "node:events";
import { create, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AttemptCancelledError, Runner, RunnerRefusedError } from "../../src/client/runner.js";
import { RESULT_MAX_BYTES } from "../../src/common/attempt-result.js";
import type { RunnerJob, RunnerOptions } from "../../src/client/runner.js";
import { grpcServiceDefinition } from "../../src/common/grpc-definition.js";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { RunnerService } from "../../src/gen/runnerline/v1/runner_pb.js";
import type { SessionRequest, SessionResponse, Welcome } from "../../src/gen/runnerline/v1/runner_pb.js";
import { SystemSnapshotSchema } from "../../src/gen/runnerline/v1/telemetry_pb.js";
import { SessionRelay, TcpRelay, enqueue, eventually, silentLogger, startTestServer } from "./helpers.js";
import type { TestServer } from "./helpers.js";

let server: TestServer;
const runners: Runner[] = [];

beforeEach(async () => {
  server = await startTestServer();
});

afterEach(async () => {
  await Promise.all(runners.splice(0).map((runner) => runner.stop()));
  await server.close();
});

function newRunner(options: Partial<RunnerOptions> = {}): Runner {
  const runner = new Runner({
    address: server.grpcAddress,
    workerId: `worker-${Math.random().toString(36).slice(2, 8)}`,
    clientVersion: "test/1",
    logger: silentLogger,
    // A fixed snapshot keeps heartbeats instant; the real collector has its own tests.
    collectSnapshot: async () => create(SystemSnapshotSchema, { hostname: "test-host" }),
    ...options,
  });
  runners.push(runner);
  return runner;
}

async function nextJob(iterator: AsyncIterator<RunnerJob>): Promise<RunnerJob> {
  const next = await iterator.next();
  if (next.done) throw new Error("assignments ended");
  return next.value;
}

const getRollout = (id: string) => server.clients.rollouts.getRollout({ rolloutId: id }).then((r) => r.rollout!);
const getAttempt = (id: string) => server.clients.attempts.getAttempt({ attemptId: id }).then((r) => r.attempt!);
const getWorker = (id: string) => server.clients.workers.getWorker({ workerId: id }).then((r) => r.worker!);

describe("Runner session", () => {
  it("is welcomed and gets heartbeats acknowledged, with telemetry reaching the worker", async () => {
    const runner = newRunner({ labels: { pool: "test" }, extraStats: () => ({ queueDepth: 3 }) });
    const connected = once(runner, "connected") as Promise<[Welcome]>;
    const acked = once(runner, "heartbeatAck");
    runner.start();

    const [welcome] = await connected;
    expect(welcome.sessionId).not.toBe("");
    expect(runner.status).toMatchObject({ state: "running", connected: true, sessionId: welcome.sessionId });

    await acked;
    expect(runner.status.lastAck?.sequence).toBe(1n);

    const worker = await eventually(
      () => getWorker(runner.workerId),
      (w) => w.snapshot?.hostname === "test-host",
    );
    expect(worker.connected).toBe(true);
    expect(worker.labels).toEqual({ pool: "test" });
    expect(worker.clientVersion).toBe("test/1");
    expect(worker.extraStats).toEqual({ queueDepth: 3 });
  });

  it("sends no heartbeats after stop", async () => {
    let collections = 0;
    const runner = newRunner({
      collectSnapshot: async () => {
        collections++;
        return create(SystemSnapshotSchema);
      },
    });
    runner.start();
    await once(runner, "heartbeatAck");
    await runner.stop();
    const after = collections;
    expect(runner.status).toMatchObject({ state: "stopped", connected: false });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(collections).toBe(after);
  });

  it("receives an enqueued rollout as plain JSON and reports its success with a result and metadata", async () => {
    const runner = newRunner();
    const jobs = runner.assignments();
    const rollout = await enqueue(server.clients, { task: "add", args: [1, 2] });

    const job = await nextJob(jobs);
    expect(job.rollout.rolloutId).toBe(rollout.rolloutId);
    expect(job.input).toEqual({ task: "add", args: [1, 2] });
    expect(job.attempt.workerId).toBe(runner.workerId);
    expect(runner.status.heldAttemptIds).toEqual([job.attempt.attemptId]);

    job.reportRunning({ step: 1 });
    await eventually(() => getAttempt(job.attempt.attemptId), (a) => a.status === AttemptStatus.RUNNING);
    job.succeed({ answer: 3 }, { finalStep: 2 });

    const done = await eventually(() => getRollout(rollout.rolloutId), (r) => r.status === RolloutStatus.SUCCEEDED);
    expect(done.latestAttemptId).toBe(job.attempt.attemptId);
    expect(toJson(ValueSchema, done.result!)).toEqual({ answer: 3 });
    const attempt = await getAttempt(job.attempt.attemptId);
    expect(attempt.status).toBe(AttemptStatus.SUCCEEDED);
    expect(toJson(ValueSchema, attempt.result!)).toEqual({ answer: 3 });
    // Metadata is its own channel: the result is not merged into it.
    expect(attempt.metadata).toEqual({ step: 1, finalStep: 2 });
    expect(runner.status.heldAttemptIds).toEqual([]);
  });

  it("run() reports a thrown error as FAILED and keeps taking work", async () => {
    const runner = newRunner({ capacity: 2 });
    const running = runner.run(async (job) => {
      const input = job.input as { ok: boolean };
      if (!input.ok) throw new Error("the agent crashed");
      return { checked: true };
    });
    const bad = await enqueue(server.clients, { ok: false });
    const good = await enqueue(server.clients, { ok: true });
    const third = await enqueue(server.clients, { ok: true });

    const failed = await eventually(() => getRollout(bad.rolloutId), (r) => r.status === RolloutStatus.FAILED);
    expect((await getAttempt(failed.latestAttemptId)).error?.message).toContain("the agent crashed");
    // WaitRollouts hands back each rollout with its result: no call per rollout.
    const { rollouts } = await server.clients.rollouts.waitRollouts({
      rolloutIds: [good.rolloutId, third.rolloutId],
      timeout: { seconds: 20n },
    });
    expect(rollouts.map((r) => [r.status, toJson(ValueSchema, r.result!)])).toEqual([
      [RolloutStatus.SUCCEEDED, { checked: true }],
      [RolloutStatus.SUCCEEDED, { checked: true }],
    ]);
    expect((await getRollout(failed.rolloutId)).result).toBeUndefined();
    await runner.stop({ drain: true });
    await running;
  });

  it("run() sends null as a result, nothing for undefined, and fails a result over the bound", async () => {
    const runner = newRunner();
    const running = runner.run(async (job) => {
      const kind = (job.input as { kind: string }).kind;
      if (kind === "null") return null;
      if (kind === "none") return undefined;
      return "x".repeat(RESULT_MAX_BYTES);
    });
    const [nullResult, noResult, tooLarge] = await Promise.all(
      ["null", "none", "large"].map((kind) => enqueue(server.clients, { kind })),
    );
    const { rollouts } = await server.clients.rollouts.waitRollouts({
      rolloutIds: [nullResult!.rolloutId, noResult!.rolloutId, tooLarge!.rolloutId],
      timeout: { seconds: 20n },
    });
    const [withNull, without, refused] = rollouts;
    expect(withNull!.status).toBe(RolloutStatus.SUCCEEDED);
    expect(withNull!.result?.kind.case).toBe("nullValue");
    expect(without!.status).toBe(RolloutStatus.SUCCEEDED);
    expect(without!.result).toBeUndefined();
    expect(refused!.status).toBe(RolloutStatus.FAILED);
    expect(refused!.failureReason).toContain(`at most ${RESULT_MAX_BYTES} are accepted`);
    await runner.stop({ drain: true });
    await running;
  });

  it("refuses a malformed worker id before dialling, with the server's rule", () => {
    expect(() => newRunner({ workerId: "has space" })).toThrow(/workerId must be 1-128 characters/);
    expect(() => newRunner({ workerId: "x".repeat(129) })).toThrow(RangeError);
    expect(() => newRunner({ workerId: "" })).toThrow(RangeError);
  });

  it("stops, and run() rejects with RunnerRefusedError, when the server refuses Hello for good", async () => {
    // The SDK accepts any positive capacity; the server refuses more than 1024 with INVALID_ARGUMENT.
    const runner = newRunner({ capacity: 5000, reconnect: { initialDelayMs: 20, maxDelayMs: 50 } });
    let disconnects = 0;
    runner.on("disconnected", () => disconnects++);
    const error = await runner.run(async () => undefined).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(RunnerRefusedError);
    expect((error as RunnerRefusedError).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((error as RunnerRefusedError).message).toContain("hello.capacity must be between 0 and 1024");
    expect(runner.status.state).toBe("stopped");
    // No retry loop: one try, and nothing after it.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(disconnects).toBe(1);
  });

  it("aborts a job's signal when its rollout is cancelled", async () => {
    const runner = newRunner();
    const jobs = runner.assignments();
    const rollout = await enqueue(server.clients, {});
    const job = await nextJob(jobs);
    const aborted = once(job.signal, "abort");

    await server.clients.rollouts.cancelRollout({ rolloutId: rollout.rolloutId });
    await aborted;
    expect(job.signal.reason).toBeInstanceOf(AttemptCancelledError);
    expect((job.signal.reason as AttemptCancelledError).attemptId).toBe(job.attempt.attemptId);

    job.fail("stopped on request");
    expect(runner.status.heldAttemptIds).toEqual([]);
    // The freed slot is granted again: the next rollout arrives.
    const next = await enqueue(server.clients, {});
    expect((await nextJob(jobs)).rollout.rolloutId).toBe(next.rolloutId);
  });

  it("stop({ drain }) waits for held work and its result, then leaves cleanly", async () => {
    const runner = newRunner();
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const running = runner.run(async () => {
      await released;
      return { drained: true };
    });
    const rollout = await enqueue(server.clients, {});
    await eventually(() => getRollout(rollout.rolloutId), (r) => r.status === RolloutStatus.RUNNING);

    let stopped = false;
    const stopping = runner.stop({ drain: true }).then(() => (stopped = true));
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(stopped).toBe(false);
    expect(runner.status.state).toBe("draining");

    release();
    await stopping;
    await running;
    // No polling: stop() returns only after the server acknowledged the result.
    expect((await getRollout(rollout.rolloutId)).status).toBe(RolloutStatus.SUCCEEDED);
    const worker = await eventually(() => getWorker(runner.workerId), (w) => !w.connected);
    expect(worker.currentAttemptIds).toEqual([]);
  });
});

describe("Runner reconnects", () => {
  it("delivers a result produced while disconnected after it reconnects", async () => {
    const relay = new TcpRelay({ host: "127.0.0.1", port: Number(server.grpcAddress.split(":")[1]) });
    await relay.start();
    try {
      const runner = newRunner({ address: relay.address, reconnect: { initialDelayMs: 50, maxDelayMs: 200 } });
      const jobs = runner.assignments();
      const rollout = await enqueue(server.clients, { n: 1 });
      const job = await nextJob(jobs);
      await once(runner, "heartbeatAck");

      const disconnected = once(runner, "disconnected");
      relay.cut();
      await disconnected;
      job.succeed({ offline: true });
      // Several failed tries while the relay refuses connections.
      await new Promise((resolve) => setTimeout(resolve, 400));
      expect((await getRollout(rollout.rolloutId)).status).not.toBe(RolloutStatus.SUCCEEDED);

      const reconnected = once(runner, "connected") as Promise<[Welcome]>;
      relay.restore();
      const [welcome] = await reconnected;
      expect(welcome.resumedAttemptIds).toEqual([job.attempt.attemptId]);
      await eventually(() => getRollout(rollout.rolloutId), (r) => r.status === RolloutStatus.SUCCEEDED);
      expect(toJson(ValueSchema, (await getAttempt(job.attempt.attemptId)).result!)).toEqual({ offline: true });

      // Credits were granted again on the new session: the resent result returned its credit, so no Ready for it.
      const next = await enqueue(server.clients, { n: 2 });
      expect((await nextJob(jobs)).rollout.rolloutId).toBe(next.rolloutId);
      // One slot, held: the server got one credit for it, not two.
      const extra = await enqueue(server.clients, { n: 3 });
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect((await getRollout(extra.rolloutId)).attemptCount).toBe(0);
    } finally {
      await relay.close();
    }
  });

  it("keeps retrying with back-off while the server is down", async () => {
    const relay = new TcpRelay({ host: "127.0.0.1", port: Number(server.grpcAddress.split(":")[1]) });
    await relay.start();
    relay.cut();
    try {
      const runner = newRunner({ address: relay.address, reconnect: { initialDelayMs: 20, maxDelayMs: 100 } });
      let failures = 0;
      runner.on("disconnected", () => failures++);
      runner.start();
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(failures).toBeGreaterThanOrEqual(3);
      // Bounded by the back-off, not a busy loop.
      expect(failures).toBeLessThan(40);
      relay.restore();
      await once(runner, "connected");
    } finally {
      await relay.close();
    }
  });
});

describe("Runner session options (fewer messages per rollout)", () => {
  const relays: SessionRelay[] = [];
  afterEach(() => relays.splice(0).forEach((relay) => relay.close()));

  async function relayTo(options: { olderServer?: boolean } = {}): Promise<SessionRelay> {
    const relay = new SessionRelay(server.grpcAddress, options);
    await relay.start();
    relays.push(relay);
    return relay;
  }

  /** Runs `count` rollouts through a runner behind `relay`; the counts are read after a drain, when all is relayed. */
  async function completeRollouts(relay: SessionRelay, count: number, capacity = 1): Promise<Welcome> {
    const rollouts = [];
    for (let i = 0; i < count; i++) rollouts.push(await enqueue(server.clients, { i }));
    const runner = newRunner({ address: relay.address, capacity });
    const connected = once(runner, "connected") as Promise<[Welcome]>;
    const running = runner.run(async (job) => job.input);
    const [welcome] = await connected;
    for (const rollout of rollouts) await eventually(() => getRollout(rollout.rolloutId), (r) => r.status === RolloutStatus.SUCCEEDED);
    await runner.stop({ drain: true });
    await running;
    return welcome;
  }

  it("returns credits with results instead of a Ready after each, and takes batches", async () => {
    const count = 12;
    const lean = await relayTo();
    const older = await relayTo({ olderServer: true });

    const confirmed = await completeRollouts(lean, count, 3);
    expect(confirmed).toMatchObject({ terminalUpdateReturnsCredit: true, assignmentBatches: true });
    const unconfirmed = await completeRollouts(older, count, 3);
    expect(unconfirmed).toMatchObject({ terminalUpdateReturnsCredit: false, assignmentBatches: false });

    // RUNNING and SUCCEEDED per rollout either way; Ready only for the first 3 slots when the server agreed
    // (measured: 1 Ready against 13 for 12 rollouts, 29 upstream messages against 41).
    for (const relay of [lean, older]) expect(relay.count("upstream", "attemptUpdate")).toBe(2 * count);
    expect(lean.count("upstream", "ready")).toBe(1);
    expect(older.count("upstream", "ready")).toBeGreaterThan(count);
    const upstream = (relay: SessionRelay) => [...relay.upstream.values()].reduce((a, b) => a + b, 0);
    expect(upstream(lean)).toBeLessThan(upstream(older) - count + 1);
    // All queued before the runner came: its first 3 credits took 3 at once.
    expect(lean.count("downstream", "assignmentBatch")).toBeGreaterThanOrEqual(1);
    expect(older.count("downstream", "assignmentBatch")).toBe(0);
    expect(older.count("downstream", "assignment")).toBe(count);
  });

  it("still sends Ready for the slot of a cancelled job, which reports nothing", async () => {
    const relay = await relayTo();
    const runner = newRunner({ address: relay.address });
    const doomed = await enqueue(server.clients, { doomed: true });
    const running = runner.run(async (job) => {
      if (job.rollout.rolloutId !== doomed.rolloutId) return "done";
      await new Promise((_, reject) => job.signal.addEventListener("abort", () => reject(job.signal.reason)));
    });
    await eventually(() => getRollout(doomed.rolloutId), (r) => r.status === RolloutStatus.RUNNING);
    await server.clients.rollouts.cancelRollout({ rolloutId: doomed.rolloutId });
    const next = await enqueue(server.clients, { next: true });
    await eventually(() => getRollout(next.rolloutId), (r) => r.status === RolloutStatus.SUCCEEDED);
    await runner.stop({ drain: true });
    await running;
    expect(relay.count("upstream", "ready")).toBe(2);
  });
});

describe("Runner refused for good", () => {
  // A server that answers every Hello with one status, as an authenticating server would.
  async function refusingServer(code: grpc.status, details: string) {
    const refusing = new grpc.Server();
    refusing.addService(grpcServiceDefinition(RunnerService), {
      session: (call: grpc.ServerDuplexStream<SessionRequest, SessionResponse>) => {
        call.once("data", () => call.emit("error", { code, details }));
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      refusing.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
    );
    return { address: `127.0.0.1:${port}`, close: () => refusing.forceShutdown() };
  }

  it.each([
    [grpc.status.UNAUTHENTICATED, "missing bearer token"],
    [grpc.status.PERMISSION_DENIED, "token may not run workers"],
  ])("stops on status %i and run() rejects with the server's message", async (code, details) => {
    const refusing = await refusingServer(code, details);
    try {
      const runner = newRunner({ address: refusing.address, reconnect: { initialDelayMs: 20, maxDelayMs: 50 } });
      const error = await runner.run(async () => undefined).then(() => undefined, (e: unknown) => e);
      expect(error).toBeInstanceOf(RunnerRefusedError);
      expect(error).toMatchObject({ code, details });
    } finally {
      refusing.close();
    }
  });

  it("keeps retrying on a status a retry may cure", async () => {
    const refusing = await refusingServer(grpc.status.UNAVAILABLE, "overloaded");
    try {
      const runner = newRunner({ address: refusing.address, reconnect: { initialDelayMs: 20, maxDelayMs: 50 } });
      let failures = 0;
      runner.on("disconnected", () => failures++);
      runner.start();
      await eventually(async () => failures, (n) => n >= 3);
      expect(runner.status.state).toBe("running");
    } finally {
      refusing.close();
    }
  });
});
