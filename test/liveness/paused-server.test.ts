/**
 * A server that stops for longer than the heartbeat grace (a long GC pause,
 * a frozen VM, SIGSTOP) must not judge the runners whose heartbeats arrived
 * meanwhile and wait unread in its sockets. When it resumes, its timers are
 * all overdue, and Node runs timers before it reads sockets: judged first, a
 * healthy runner's attempt would end UNRESPONSIVE. The watchdog reads what
 * has arrived before it decides.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { createRunnerlineClients } from "../../src/client/clients.js";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { WorkerStatus } from "../../src/gen/runnerline/v1/worker_pb.js";
import { eventually, freePort } from "../polling.js";
import { type CliProcess, startCli, stopAll } from "./processes.js";

vi.setConfig({ testTimeout: 60_000 });

const INTERVAL_S = 0.3;
const GRACE_S = 0.9;
const PAUSE_MS = 2_500;

const processes: CliProcess[] = [];
afterEach(() => stopAll(processes.splice(0)));

describe("a paused server", () => {
  it("reads the heartbeats that arrived while it was stopped before it judges anyone", async () => {
    const grpcPort = await freePort();
    const server = startCli([
      "serve", "--store", "memory", "--grpc-addr", `127.0.0.1:${grpcPort}`, "--http-addr", "127.0.0.1:0",
      "--heartbeat-interval", String(INTERVAL_S), "--heartbeat-grace", String(GRACE_S),
    ]);
    processes.push(server);
    await server.waitFor("serving gRPC", 30_000);
    const clients = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${grpcPort}` });
    const runner = startCli(["runner", "--worker-id", "steady", "--exec", "sleep 5", "--server", `127.0.0.1:${grpcPort}`]);
    processes.push(runner);
    await eventually(
      () => clients.workers.listWorkers({}).then((r) => r.workers.find((w) => w.workerId === "steady")),
      (w) => w?.status === WorkerStatus.IDLE,
      30_000,
    );
    // One attempt only: an UNRESPONSIVE verdict would fail the rollout for good.
    const { rollout } = await clients.rollouts.enqueueRollout({ config: { maxAttempts: 1 } });
    const rolloutId = rollout!.rolloutId;
    await eventually(() => clients.rollouts.getRollout({ rolloutId }), (r) => r.rollout?.status === RolloutStatus.RUNNING, 15_000);

    server.child.kill("SIGSTOP");
    await new Promise((resolve) => setTimeout(resolve, PAUSE_MS)); // the runner keeps beating into the socket
    server.child.kill("SIGCONT");

    const done = await eventually(
      () => clients.rollouts.getRollout({ rolloutId }).then((r) => r.rollout!),
      (r) => r.endTime !== undefined,
      20_000,
    );
    const { attempts } = await clients.attempts.listAttempts({ rolloutId });
    expect(attempts.map((a) => [AttemptStatus[a.status], a.error?.message ?? ""])).toEqual([["SUCCEEDED", ""]]);
    expect(RolloutStatus[done.status]).toBe("SUCCEEDED");
  });
});
