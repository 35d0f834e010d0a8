import { afterAll, beforeAll, expect, it } from "vitest";
import { createRunnerlineClients, type RunnerlineClients } from "../../src/client/clients.js";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { WorkerStatus, type WatchWorkersResponse } from "../../src/gen/runnerline/v1/worker_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { eventually } from "../polling.js";

let server: RunningServer;
let c: RunnerlineClients;

beforeAll(async () => {
  server = await startServer({ grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", store: "memory", log: () => {} });
  c = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${server.grpcPort}` });
});

afterAll(async () => {
  await server.close();
});

it("WatchWorkers lists the matching workers, then streams their status changes", async () => {
  await c.rollouts.dequeueRollout({ workerId: "watched-1" });
  await c.workers.sendHeartbeat({ workerId: "other" });
  const abort = new AbortController();
  const seen: WatchWorkersResponse[] = [];
  const watching = (async () => {
    try {
      for await (const message of c.workers.watchWorkers({ workerIdContains: "watched" }, { signal: abort.signal })) {
        seen.push(message);
        if (seen.length === 3) abort.abort();
      }
    } catch (error) {
      if (!abort.signal.aborted) throw error;
    }
  })();
  await eventually(async () => seen.length, (n) => n >= 1, 5_000);
  await c.rollouts.enqueueRollout({});
  const { attempt } = await c.rollouts.dequeueRollout({ workerId: "watched-1" });
  await c.attempts.updateAttempt({ attemptId: attempt!.attemptId, status: AttemptStatus.SUCCEEDED });
  await watching;
  expect(seen.map((m) => [m.worker?.workerId, WorkerStatus[m.worker!.status], m.initial])).toEqual([
    ["watched-1", "IDLE", true],
    ["watched-1", "BUSY", false],
    ["watched-1", "IDLE", false],
  ]);
});
