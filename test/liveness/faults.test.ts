import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { createRunnerlineClients, type RunnerlineClients } from "../../src/client/clients.js";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { WorkerStatus } from "../../src/gen/runnerline/v1/worker_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { TcpRelay } from "../client/helpers.js";
import { eventually } from "../polling.js";
import { type CliProcess, startCli, stopAll } from "./processes.js";

/**
 * Machines die, hang and lose their network mid-attempt. Real runner
 * processes against a real server with a short heartbeat interval.
 */
// Real processes on a 2-core machine: generous limits, the assertions carry the precision.
vi.setConfig({ testTimeout: 60_000 });

const INTERVAL_MS = 200;
const GRACE_MS = 600;

let server: RunningServer;
let clients: RunnerlineClients;
const processes: CliProcess[] = [];

beforeAll(async () => {
  server = await startServer({
    grpcAddress: "127.0.0.1:0",
    httpAddress: "127.0.0.1:0",
    store: "memory",
    heartbeatIntervalMs: INTERVAL_MS,
    heartbeatGraceMs: GRACE_MS,
    drainTimeoutMs: 1_000,
    log: () => {},
  });
  clients = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${server.grpcPort}` });
});

afterEach(() => stopAll(processes.splice(0)));
afterAll(async () => {
  await server.close();
});

/** Starts a runner process and waits until it is connected and asking for work. */
async function runner(workerId: string, command: string, address = `127.0.0.1:${server.grpcPort}`) {
  const p = startCli(["runner", "--worker-id", workerId, "--exec", command, "--server", address, "--cancel-grace", "0.5"]);
  processes.push(p);
  await p.waitFor("started", 30_000);
  await eventually(
    () => clients.workers.listWorkers({ workerIdContains: workerId }).then((r) => r.workers.find((w) => w.workerId === workerId)),
    (w) => w?.status === WorkerStatus.IDLE,
    30_000,
  );
  return p;
}

const worker = (workerId: string) => clients.workers.getWorker({ workerId }).then((r) => r.worker!);
const attempt = (attemptId: string) => clients.attempts.getAttempt({ attemptId }).then((r) => r.attempt!);
const rollout = (rolloutId: string) => clients.rollouts.getRollout({ rolloutId }).then((r) => r.rollout!);

async function enqueueRetryable() {
  const { rollout } = await clients.rollouts.enqueueRollout({
    config: { maxAttempts: 2, retryOn: [AttemptStatus.UNRESPONSIVE] },
  });
  return rollout!.rolloutId;
}

async function runningAttemptOf(rolloutId: string) {
  const running = await eventually(() => rollout(rolloutId), (r) => r.status === RolloutStatus.RUNNING);
  return running.latestAttemptId;
}

describe("silent runners", () => {
  it("kill -9 mid-attempt: worker UNKNOWN at once, attempt UNRESPONSIVE after its timeout, retried elsewhere", async () => {
    const doomed = await runner("doomed", "sleep 30");
    const rolloutId = await enqueueRetryable();
    const attemptId = await runningAttemptOf(rolloutId);
    const killedAt = Date.now();
    doomed.child.kill("SIGKILL");
    await eventually(() => worker("doomed"), (w) => w.status === WorkerStatus.UNKNOWN);
    const unknownAfter = Date.now() - killedAt;
    await eventually(() => attempt(attemptId), (a) => a.status === AttemptStatus.UNRESPONSIVE, 5_000);
    const unresponsiveAfter = Date.now() - killedAt;
    console.log(`killed runner: UNKNOWN after ${unknownAfter} ms, attempt UNRESPONSIVE after ${unresponsiveAfter} ms (grace ${GRACE_MS} ms)`);
    expect(unknownAfter).toBeLessThan(GRACE_MS);
    expect((await rollout(rolloutId)).status).toBe(RolloutStatus.REQUEUING);

    await runner("rescuer", "cat > /dev/null");
    const done = await eventually(() => rollout(rolloutId), (r) => r.status === RolloutStatus.SUCCEEDED, 15_000);
    expect(done.attemptCount).toBe(2);
  });

  it("SIGSTOP (hung, socket open): UNKNOWN after the heartbeat grace, attempt UNRESPONSIVE; SIGCONT gets it cancelled", async () => {
    const hung = await runner("hung", "sleep 30");
    const rolloutId = await enqueueRetryable();
    const attemptId = await runningAttemptOf(rolloutId);
    await eventually(() => worker("hung"), (w) => w.status === WorkerStatus.BUSY);
    const stoppedAt = Date.now();
    hung.child.kill("SIGSTOP");
    await eventually(() => worker("hung"), (w) => w.status === WorkerStatus.UNKNOWN, 5_000);
    const unknownAfter = Date.now() - stoppedAt;
    await eventually(() => attempt(attemptId), (a) => a.status === AttemptStatus.UNRESPONSIVE, 5_000);
    console.log(`hung runner: UNKNOWN after ${unknownAfter} ms (grace ${GRACE_MS} ms)`);
    expect(unknownAfter).toBeGreaterThanOrEqual(GRACE_MS - INTERVAL_MS);
    expect((await worker("hung")).connected).toBe(true);

    // Another runner takes the retry; the hung one, once it wakes, is told to stop.
    await runner("rescuer-2", "cat > /dev/null");
    await eventually(() => rollout(rolloutId), (r) => r.status === RolloutStatus.SUCCEEDED, 15_000);
    hung.child.kill("SIGCONT");
    await hung.waitFor(/cancel/i, 20_000);
    expect((await attempt(attemptId)).status).toBe(AttemptStatus.UNRESPONSIVE);
  });
});

describe("network faults", () => {
  it("a connection dropped and restored within the grace period keeps its attempt", async () => {
    const relay = new TcpRelay({ host: "127.0.0.1", port: server.grpcPort });
    await relay.start();
    try {
      const p = await runner("flaky", "sleep 1.5; cat > /dev/null", relay.address);
      const { rollout: enqueued } = await clients.rollouts.enqueueRollout({
        config: { unresponsiveTimeout: { seconds: 10n } },
      });
      const attemptId = await runningAttemptOf(enqueued!.rolloutId);
      relay.cut();
      await eventually(() => worker("flaky"), (w) => !w.connected);
      relay.restore();
      await eventually(() => worker("flaky"), (w) => w.connected, 10_000);
      const done = await eventually(() => rollout(enqueued!.rolloutId), (r) => r.status === RolloutStatus.SUCCEEDED, 20_000);
      expect(done.attemptCount).toBe(1);
      expect((await attempt(attemptId)).status).toBe(AttemptStatus.SUCCEEDED);
      expect(p.output()).toMatch(/session .* started[\s\S]*session .* started/);
    } finally {
      await relay.close();
    }
  });
});

describe("rollout clocks over the wire", () => {
  it("queue_timeout fails a rollout nobody takes, with the reason", async () => {
    const { rollout: enqueued } = await clients.rollouts.enqueueRollout({ config: { queueTimeout: { nanos: 100_000_000 } } });
    const failed = await eventually(() => rollout(enqueued!.rolloutId), (r) => r.status === RolloutStatus.FAILED, 3_000);
    expect(failed.failureReason).toContain("queue_timeout");
  });

  it("deadline cancels the running attempt on its runner", async () => {
    const p = await runner("deadline-runner", "trap 'echo got-sigterm >&2; exit 1' TERM; sleep 30 & wait");
    const { rollout: enqueued } = await clients.rollouts.enqueueRollout({ config: { deadline: { nanos: 800_000_000 } } });
    await runningAttemptOf(enqueued!.rolloutId);
    const failed = await eventually(() => rollout(enqueued!.rolloutId), (r) => r.status === RolloutStatus.FAILED, 5_000);
    expect(failed.failureReason).toContain("deadline");
    await p.waitFor("got-sigterm", 5_000);
  });
});

describe("HTTP/2 keepalive", () => {
  it("finds a peer that stopped answering (socket open, process frozen) and ends its session", async () => {
    const pinging = await startServer({
      grpcAddress: "127.0.0.1:0",
      httpAddress: "127.0.0.1:0",
      store: "memory",
      heartbeatIntervalMs: 60_000, // so that only the pings can notice
      keepaliveTimeMs: 200,
      keepaliveTimeoutMs: 200,
      drainTimeoutMs: 500,
      log: () => {},
    });
    try {
      const local = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${pinging.grpcPort}` });
      const frozen = startCli(["runner", "--worker-id", "frozen", "--exec", "true", "--server", `127.0.0.1:${pinging.grpcPort}`]);
      processes.push(frozen);
      const frozenWorker = () => local.workers.getWorker({ workerId: "frozen" }).then((r) => r.worker!, () => undefined);
      await eventually(frozenWorker, (w) => w?.connected === true, 30_000);
      frozen.child.kill("SIGSTOP");
      const stoppedAt = Date.now();
      await eventually(frozenWorker, (w) => w?.connected === false, 10_000);
      console.log(`keepalive: frozen peer's session ended after ${Date.now() - stoppedAt} ms (ping every 200 ms, 200 ms timeout)`);
      expect((await frozenWorker())?.status).toBe(WorkerStatus.UNKNOWN);
    } finally {
      await pinging.close();
    }
  });
});
