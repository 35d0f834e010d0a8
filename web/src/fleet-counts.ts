// Header counts. Derived from ListWorkers / ListRollouts totals (one
// page_size=1 call per status, in parallel) until the server offers a fleet
// summary RPC; switching to it replaces `loadFleetCounts` alone.
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { WorkerStatus } from "../../src/gen/runnerline/v1/worker_pb.js";
import { rolloutClient, workerClient } from "./api.js";
import { ROLLOUT_STATUSES, WORKER_STATUSES } from "./table-query.js";

export interface FleetCounts {
  workers: Map<WorkerStatus, number>;
  rollouts: Map<RolloutStatus, number>;
  /** Rollouts waiting for a runner: QUEUING plus REQUEUING. */
  queueDepth: number;
}

export async function loadFleetCounts(signal?: AbortSignal): Promise<FleetCounts> {
  const [workers, rollouts] = await Promise.all([
    Promise.all(
      WORKER_STATUSES.map(async (status) => {
        const page = await workerClient.listWorkers({ pageSize: 1, statuses: [status] }, { signal });
        return [status, page.totalSize] as const;
      }),
    ),
    Promise.all(
      ROLLOUT_STATUSES.map(async (status) => {
        const page = await rolloutClient.listRollouts({ pageSize: 1, statuses: [status] }, { signal });
        return [status, page.totalSize] as const;
      }),
    ),
  ]);
  const rolloutCounts = new Map(rollouts);
  return {
    workers: new Map(workers),
    rollouts: rolloutCounts,
    queueDepth: (rolloutCounts.get(RolloutStatus.QUEUING) ?? 0) + (rolloutCounts.get(RolloutStatus.REQUEUING) ?? 0),
  };
}
