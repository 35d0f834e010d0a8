import { afterAll, beforeAll, expect, it } from "vitest";
import { createRunnerlineClients, type RunnerlineClients } from "../../src/client/clients.js";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { WorkerStatus } from "../../src/gen/runnerline/v1/worker_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";

let server: RunningServer;
let c: RunnerlineClients;

beforeAll(async () => {
  server = await startServer({ grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", store: "memory", log: () => {} });
  c = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${server.grpcPort}` });
  // worker-a finishes its rollout (IDLE); worker-b and worker-c stay BUSY; lonely only beats (UNKNOWN, never busy).
  await c.rollouts.enqueueRollouts({ requests: [{}, {}, {}] });
  for (const workerId of ["worker-a", "worker-b", "worker-c"]) {
    const { attempt } = await c.rollouts.dequeueRollout({ workerId });
    if (workerId === "worker-a") await c.attempts.updateAttempt({ attemptId: attempt!.attemptId, status: AttemptStatus.SUCCEEDED });
  }
  await c.workers.sendHeartbeat({ workerId: "lonely" });
});

afterAll(async () => {
  await server.close();
});

const ids = (workers: { workerId: string }[]) => workers.map((w) => w.workerId);

it("filters by status and id substring, orders descending, and counts before paging (acceptance 15)", async () => {
  const page = await c.workers.listWorkers({ statuses: [WorkerStatus.BUSY], workerIdContains: "worker", orderBy: "worker_id desc" });
  expect(ids(page.workers)).toEqual(["worker-c", "worker-b"]);
  expect(page.totalSize).toBe(2);
  const all = await c.workers.listWorkers({});
  expect(ids(all.workers)).toEqual(["lonely", "worker-a", "worker-b", "worker-c"]);
});

it("unset times sort last ascending and first descending (acceptance 16)", async () => {
  const ascending = await c.workers.listWorkers({ orderBy: "last_busy_time" });
  expect(ids(ascending.workers).at(-1)).toBe("lonely");
  const descending = await c.workers.listWorkers({ orderBy: "last_busy_time desc" });
  expect(ids(descending.workers)[0]).toBe("lonely");
});

it("pages with tokens in a stable order until the last page", async () => {
  const seen: string[] = [];
  let pageToken = "";
  let pages = 0;
  do {
    const page = await c.workers.listWorkers({ pageSize: 1, pageToken, orderBy: "status" });
    expect(page.totalSize).toBe(4);
    seen.push(...ids(page.workers));
    pageToken = page.nextPageToken;
    pages += 1;
  } while (pageToken !== "");
  expect(pages).toBe(4);
  expect(new Set(seen).size).toBe(4);
  const whole = await c.workers.listWorkers({ orderBy: "status" });
  expect(seen).toEqual(ids(whole.workers));
});

it("lists rollouts and attempts with their filters", async () => {
  const succeeded = await c.rollouts.listRollouts({ statuses: [RolloutStatus.SUCCEEDED] });
  expect(succeeded.totalSize).toBe(1);
  const byWorker = await c.attempts.listAttempts({ workerId: "worker-b" });
  expect(byWorker.attempts.map((a) => a.workerId)).toEqual(["worker-b"]);
  const byRollout = await c.attempts.listAttempts({ rolloutId: succeeded.rollouts[0]!.rolloutId });
  expect(byRollout.attempts).toHaveLength(1);
  expect(byRollout.attempts[0]!.status).toBe(AttemptStatus.SUCCEEDED);
  const defaults = await c.rollouts.listRollouts({ pageSize: 2 });
  expect(defaults.rollouts).toHaveLength(2);
  expect(defaults.nextPageToken).not.toBe("");
});
