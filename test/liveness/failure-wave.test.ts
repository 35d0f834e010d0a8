import { create } from "@bufbuild/protobuf";
import type { RunnerHandler } from "../../src/client/runner.js";
import { afterEach, expect, it } from "vitest";
import { createRunnerlineClients } from "../../src/client/clients.js";
import { Runner } from "../../src/client/runner.js";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { SystemSnapshotSchema } from "../../src/gen/runnerline/v1/telemetry_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { silentLogger } from "../client/helpers.js";
import { eventually } from "../polling.js";

const runners: Runner[] = [];
let server: RunningServer | undefined;

function startRunner(address: string, workerId: string, handler: RunnerHandler): Runner {
  const runner = new Runner({
    address,
    workerId,
    logger: silentLogger,
    collectSnapshot: async () => create(SystemSnapshotSchema, { hostname: "wave-host" }),
  });
  runners.push(runner);
  void runner.run(handler);
  return runner;
}

afterEach(async () => {
  await Promise.all(runners.splice(0).map((runner) => runner.stop()));
  await server?.close();
  server = undefined;
});

// Issue 18 §1: a wave of failures that hits every runner (a model server briefly down) is the work's fault, not the
// runners'. Before the fleet comparison, each runner's first three failures quarantined it: the whole fleet was
// quarantined within a second and the retries had nowhere to go.
it("a wave of first-attempt failures on every runner quarantines none of 30, and every rollout completes on its retry", async () => {
  const logs: string[] = [];
  server = await startServer({ grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", store: "memory", log: (line) => logs.push(line) });
  const address = `127.0.0.1:${server.grpcPort}`;
  const clients = createRunnerlineClients({ baseUrl: `http://${address}` });
  for (let i = 0; i < 30; i++) {
    // Every first attempt fails at once (the inference server was down); every retry succeeds.
    startRunner(address, `wave-${i}`, async (job) => {
      if (job.attempt.sequenceId === 1) throw new Error("inference server unavailable");
      return { reward: 1 };
    });
  }
  await eventually(
    () => clients.workers.getFleetSummary({}),
    (response) => response.summary?.workers?.connected === 30,
    30_000,
  );

  const { rollouts } = await clients.rollouts.enqueueRollouts({
    requests: Array.from({ length: 150 }, (_, i) => ({
      input: { kind: { case: "numberValue", value: i } },
      config: { maxAttempts: 2, retryOn: [AttemptStatus.FAILED] },
    })),
  });
  const ids = rollouts.map((r) => r.rolloutId);
  const finished = await eventually(
    () => clients.rollouts.waitRollouts({ rolloutIds: ids, timeout: { seconds: 5n } }),
    (response) => response.rollouts.length === ids.length,
    40_000,
  );

  expect(finished.rollouts.filter((r) => r.status !== RolloutStatus.SUCCEEDED).map((r) => r.failureReason)).toEqual([]);
  const { summary } = await clients.workers.getFleetSummary({});
  expect(summary?.workers?.quarantined).toBe(0);
  expect(logs.filter((line) => / quarantined for /.test(line))).toEqual([]);
}, 90_000);

// Issue 18 §1: at most 10 % of the connected fleet (at least one runner) is quarantined at once; beyond it the
// quarantine is held back, logged and counted.
it("two black-hole runners among five: one is quarantined, the other held back (logged, counted in /metrics)", async () => {
  const logs: string[] = [];
  server = await startServer({ grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", store: "memory", log: (line) => logs.push(line) });
  const address = `127.0.0.1:${server.grpcPort}`;
  const clients = createRunnerlineClients({ baseUrl: `http://${address}` });
  for (let i = 0; i < 3; i++) startRunner(address, `healthy-${i}`, () => new Promise((resolve) => setTimeout(() => resolve({ reward: 1 }), 200)));
  for (const workerId of ["hole-1", "hole-2"]) {
    startRunner(address, workerId, async () => {
      throw new Error("solver not found");
    });
  }
  await eventually(
    () => clients.workers.getFleetSummary({}),
    (response) => response.summary?.workers?.connected === 5,
    30_000,
  );
  const { rollouts } = await clients.rollouts.enqueueRollouts({
    requests: Array.from({ length: 30 }, () => ({ config: { maxAttempts: 3, retryOn: [AttemptStatus.FAILED] } })),
  });
  const ids = rollouts.map((r) => r.rolloutId);
  await eventually(
    () => clients.rollouts.listRollouts({ pageSize: 100 }),
    (page) => page.rollouts.filter((r) => ids.includes(r.rolloutId) && r.status === RolloutStatus.SUCCEEDED).length === ids.length,
    60_000,
  );
  const holes = await Promise.all(["hole-1", "hole-2"].map((workerId) => clients.workers.getWorker({ workerId })));
  expect(holes.filter(({ worker }) => worker!.quarantineCount > 0)).toHaveLength(1);
  expect(logs.some((line) => /worker hole-\d not quarantined: 1 of 5 connected workers are already \(at most 10 %\)/.test(line))).toBe(true);
  const metrics = await (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`)).text();
  const heldBack = Number(/^runnerline_quarantines_held_back_total (\d+)$/m.exec(metrics)?.[1]);
  expect(heldBack).toBeGreaterThanOrEqual(1);
}, 90_000);

// Issue 18 §1: a retry keeps away from the runner that failed it only while another could take it now. A runner
// busy with a long attempt, that last asked for work long ago, is no such runner.
it("a retry goes back at once to the runner that failed it when the only other runner is busy with a long attempt", async () => {
  server = await startServer({
    grpcAddress: "127.0.0.1:0",
    httpAddress: "127.0.0.1:0",
    store: "memory",
    heartbeatIntervalMs: 300,
    log: () => {},
  });
  const address = `127.0.0.1:${server.grpcPort}`;
  const clients = createRunnerlineClients({ baseUrl: `http://${address}` });
  let finishLong: (() => void) | undefined;
  startRunner(address, "busy", () => new Promise((resolve) => (finishLong = () => resolve({ reward: 0 }))));
  const { rollout: long } = await clients.rollouts.enqueueRollout({});
  await eventually(
    () => clients.workers.getWorker({ workerId: "busy" }),
    ({ worker }) => worker!.currentRolloutIds.includes(long!.rolloutId),
    10_000,
  );
  await new Promise((resolve) => setTimeout(resolve, 1_000)); // longer ago than the heartbeat interval
  startRunner(address, "flaky", async (job) => {
    if (job.attempt.sequenceId === 1) throw new Error("flaked once");
    return { reward: 1 };
  });
  const { rollout } = await clients.rollouts.enqueueRollout({ config: { maxAttempts: 2, retryOn: [AttemptStatus.FAILED] } });
  // The default --retry-elsewhere is 30 s: waiting it out for "busy" would miss this 10 s wait.
  const { rollouts } = await clients.rollouts.waitRollouts({ rolloutIds: [rollout!.rolloutId], timeout: { seconds: 10n } });
  expect(rollouts.map((r) => RolloutStatus[r.status])).toEqual(["SUCCEEDED"]);
  const { attempts } = await clients.attempts.listAttempts({ rolloutId: rollout!.rolloutId });
  expect(attempts.map((a) => a.workerId)).toEqual(["flaky", "flaky"]);
  finishLong?.();
}, 60_000);
