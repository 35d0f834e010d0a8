import { afterEach, expect, it } from "vitest";
import { createRunnerlineClients } from "../../src/client/clients.js";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { msOf } from "../../src/server/domain/time.js";
import { eventually } from "../polling.js";
import { type CliProcess, startCli, stopAll } from "./processes.js";

const processes: CliProcess[] = [];
let server: RunningServer | undefined;

afterEach(async () => {
  stopAll(processes.splice(0));
  await server?.close();
  server = undefined;
});

// Issue 8 §1: three healthy CLI runners and one whose command does not exist.
// Before retries went elsewhere and quarantine existed, 24 of 30 rollouts ended
// FAILED: the bad runner failed each attempt in milliseconds, asked for more,
// and got the retries too.
it("one black-hole runner among three healthy ones fails none of 30 rollouts (max_attempts 2, retry_on FAILED)", async () => {
  const logs: string[] = [];
  server = await startServer({
    grpcAddress: "127.0.0.1:0",
    httpAddress: "127.0.0.1:0",
    store: "memory",
    drainTimeoutMs: 1_000,
    log: (line) => logs.push(line),
  });
  const address = `127.0.0.1:${server.grpcPort}`;
  const clients = createRunnerlineClients({ baseUrl: `http://${address}` });
  const healthy = ["healthy-1", "healthy-2", "healthy-3"];
  for (const workerId of healthy) {
    processes.push(startCli(["runner", "--worker-id", workerId, "--exec", "sleep 0.3", "--server", address, "--cancel-grace", "0"]));
  }
  processes.push(startCli(["runner", "--worker-id", "black-hole", "--exec", "/nonexistent/solver", "--server", address, "--cancel-grace", "0"]));
  await eventually(
    () => clients.workers.listWorkers({}),
    (page) => page.workers.filter((w) => w.connected).length === 4,
    30_000,
  );

  const { rollouts } = await clients.rollouts.enqueueRollouts({
    requests: Array.from({ length: 30 }, (_, i) => ({
      input: { kind: { case: "numberValue", value: i } },
      config: { maxAttempts: 2, retryOn: [AttemptStatus.FAILED] },
    })),
  });
  const ids = rollouts.map((r) => r.rolloutId);
  const finished = await eventually(
    () => clients.rollouts.waitRollouts({ rolloutIds: ids, timeout: { seconds: 5n } }),
    (response) => response.rollouts.length === ids.length,
    60_000,
  );

  const failed = finished.rollouts.filter((r) => r.status !== RolloutStatus.SUCCEEDED);
  expect(failed.map((r) => `${r.rolloutId}: ${RolloutStatus[r.status]} ${r.failureReason}`)).toEqual([]);
  const { attempts } = await clients.attempts.listAttempts({ pageSize: 1000 });
  for (const attempt of attempts.filter((a) => a.sequenceId === 2)) {
    expect(attempt.workerId, `second attempt of ${attempt.rolloutId}`).not.toBe("black-hole");
  }
  const blackHoleAttempts = attempts.filter((a) => a.workerId === "black-hole");
  expect(blackHoleAttempts.length).toBeLessThanOrEqual(3);

  const { worker } = await clients.workers.getWorker({ workerId: "black-hole" });
  expect(worker!.quarantineCount).toBe(1);
  expect(worker!.quarantineReason).toMatch(/last 3 attempts all ended FAILED or TIMEOUT/);
  expect(msOf(worker!.quarantineUntil)).toBeGreaterThan(Date.now());
  expect(logs.some((line) => /worker black-hole quarantined for 30 s/.test(line))).toBe(true);
  expect(logs.filter((line) => /^rollout retrying rolloutId=\S+ attemptCount=1 maxAttempts=2 /.test(line))).toHaveLength(blackHoleAttempts.length);

  // An operator lifts the quarantine at once; asking again is a clear refusal.
  const released = await clients.workers.releaseWorker({ workerId: "black-hole" });
  expect(released.worker).toMatchObject({ quarantineCount: 0, quarantineReason: "" });
  expect(released.worker!.quarantineUntil).toBeUndefined();
  await expect(clients.workers.releaseWorker({ workerId: "black-hole" })).rejects.toThrow(/not quarantined/);
  await expect(clients.workers.releaseWorker({ workerId: "nobody" })).rejects.toThrow(/not found/);
}, 120_000);
