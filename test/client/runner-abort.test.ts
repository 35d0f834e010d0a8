/**
 * stop() without drain against a real server: the attempts in hand are
 * reported FAILED ("the runner was stopped") and the runner says Goodbye
 * before the stream closes, so the server retries their rollouts at once
 * instead of waiting for them to go UNRESPONSIVE; the log says whether the
 * report reached the server.
 */
import { once } from "node:events";
import { create } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Runner } from "../../src/client/runner.js";
import type { RunnerJob, RunnerLogger, RunnerOptions } from "../../src/client/runner.js";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { SystemSnapshotSchema } from "../../src/gen/runnerline/v1/telemetry_pb.js";
import { TcpRelay, eventually, silentLogger, startTestServer } from "./helpers.js";
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
    logger: silentLogger,
    collectSnapshot: async () => create(SystemSnapshotSchema, { hostname: "test-host" }),
    ...options,
  });
  runners.push(runner);
  return runner;
}

function recordingLogger(lines: string[]): RunnerLogger {
  return { debug() {}, info: (l) => lines.push(l), warn: (l) => lines.push(l), error: (l) => lines.push(l) };
}

/** A handler that runs until its job is aborted. */
function untilAborted(started: RunnerJob[]) {
  return async (job: RunnerJob) => {
    started.push(job);
    if (!job.signal.aborted) await once(job.signal, "abort");
    throw job.signal.reason;
  };
}

async function enqueueRetried(): Promise<string> {
  const { rollout } = await server.clients.rollouts.enqueueRollout({ config: { maxAttempts: 2, retryOn: [AttemptStatus.FAILED] } });
  return rollout!.rolloutId;
}

const getRollout = (id: string) => server.clients.rollouts.getRollout({ rolloutId: id }).then((r) => r.rollout!);
const getAttempt = (id: string) => server.clients.attempts.getAttempt({ attemptId: id }).then((r) => r.attempt!);

describe("stop() without drain", () => {
  it("reports the attempts in hand FAILED before closing, so the server retries their rollouts at once", async () => {
    const lines: string[] = [];
    const runner = newRunner({ capacity: 2, logger: recordingLogger(lines) });
    const started: RunnerJob[] = [];
    const running = runner.run(untilAborted(started));
    const rolloutIds = [await enqueueRetried(), await enqueueRetried()];
    await eventually(async () => started.length, (n) => n === 2);

    await runner.stop({ reason: "test abort" });
    await running;
    // stop() returned once the server had the reports: no waiting for the UNRESPONSIVE timeout.
    for (const rolloutId of rolloutIds) {
      const rollout = await getRollout(rolloutId);
      expect(rollout).toMatchObject({ status: RolloutStatus.REQUEUING, attemptCount: 1 });
      const attempt = await getAttempt(rollout.latestAttemptId);
      expect(attempt.status).toBe(AttemptStatus.FAILED);
      expect(attempt.error?.message).toBe("the runner was stopped (test abort)");
    }
    // The handlers were aborted; their own failures came after the report and changed nothing.
    expect(started.every((job) => job.signal.aborted)).toBe(true);
    const report = lines.find((l) => l.includes("stopped without draining"));
    expect(report).toContain(`reported ${started.map((job) => job.attempt.attemptId).join(", ")} as FAILED: the server confirmed the report`);
    const worker = (await server.clients.workers.getWorker({ workerId: runner.workerId })).worker!;
    expect(worker.currentAttemptIds).toEqual([]);

    // The retries go to the next runner that asks.
    const next = newRunner();
    const nextRun = next.run(async () => ({ retried: true }));
    for (const rolloutId of rolloutIds) {
      await eventually(() => getRollout(rolloutId), (r) => r.status === RolloutStatus.SUCCEEDED);
    }
    await next.stop({ drain: true });
    await nextRun;
  });

  it("escalating a drain reports the attempts in hand FAILED too", async () => {
    const runner = newRunner();
    const started: RunnerJob[] = [];
    const running = runner.run(untilAborted(started));
    const rolloutId = await enqueueRetried();
    await eventually(async () => started.length, (n) => n === 1);
    const draining = runner.stop({ drain: true });
    await eventually(async () => runner.status.state, (state) => state === "draining");
    await runner.stop({ reason: "second signal" });
    await draining;
    await running;
    const rollout = await getRollout(rolloutId);
    expect(rollout.status).toBe(RolloutStatus.REQUEUING);
    expect((await getAttempt(rollout.latestAttemptId)).error?.message).toBe("the runner was stopped (second signal)");
  });

  it("says so when the report cannot reach the server", async () => {
    const relay = await new TcpRelay({ host: "127.0.0.1", port: Number(server.grpcAddress.split(":")[1]) }).start();
    try {
      const lines: string[] = [];
      const runner = newRunner({ address: relay.address, logger: recordingLogger(lines), reconnect: { initialDelayMs: 50, maxDelayMs: 100 } });
      const started: RunnerJob[] = [];
      const running = runner.run(untilAborted(started));
      await enqueueRetried();
      await eventually(async () => started.length, (n) => n === 1);
      const disconnected = once(runner, "disconnected");
      relay.cut();
      await disconnected;
      await runner.stop({ reason: "test abort" });
      await running;
      const report = lines.find((l) => l.includes("stopped without draining"));
      expect(report).toContain(`reported ${started[0]!.attempt.attemptId} as FAILED: the report did NOT reach the server`);
    } finally {
      await relay.close();
    }
  });
});
