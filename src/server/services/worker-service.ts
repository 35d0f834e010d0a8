import { create, toBinary } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  type FleetSummary,
  type Worker,
  WorkerSchema,
  WorkerService,
  WorkerStatus,
  SendHeartbeatRequestSchema,
  type WatchWorkersResponse,
  WatchWorkersResponseSchema,
} from "../../gen/runnerline/v1/worker_pb.js";
import type { Coordinator } from "../dispatch/coordinator.js";
import { requireCordonReason } from "../domain/cordon.js";
import { DomainError } from "../domain/errors.js";
import type { Clock } from "../domain/time.js";
import type { FleetCounters } from "../fleet/fleet-counters.js";
import type { Retention } from "../fleet/retention.js";
import { matchesWorker, WORKER_SORT_FIELDS } from "../store/query.js";
import type { Store } from "../store/store.js";
import type { WorkerHistory } from "../telemetry/worker-history.js";
import { callerNameKey } from "../transport/context.js";
import { durable } from "./durable.js";
import type { HeartbeatGate } from "./heartbeat-gate.js";
import { type Limits, requireBoundedLabels } from "./limits.js";
import { fitToBytes, listQuery, nextPageToken } from "./paging.js";
import { boundedExtraStats, requireClientId, requireEnumValues, requireFilter, requireId } from "./validation.js";
import { requireJsonSafe } from "./well-known-types.js";

/** Changes buffered for one slow WatchWorkers client before it is cut off. */
const WATCH_BUFFER_LIMIT = 10_000;

export interface WorkerServiceOptions {
  /** Recent telemetry per worker, for GetWorkerHistory. */
  history: WorkerHistory;
  /** Reported in ListWorkersResponse so views can mark stale heartbeats. */
  heartbeatGraceMs: number;
  clock: Clock;
  fleet: FleetCounters;
  /** The fleet summary when it is not this server's own counters' (servers sharing a store read it from there). */
  fleetSummary?: () => Promise<FleetSummary>;
  retention: Retention;
  limits: Limits;
  heartbeats: HeartbeatGate;
}

export function workerService(
  coordinator: Coordinator,
  store: Store,
  { history, heartbeatGraceMs, clock, fleet, fleetSummary, retention, limits, heartbeats }: WorkerServiceOptions,
): ServiceImpl<typeof WorkerService> {
  const heartbeatGrace = durationFromMs(heartbeatGraceMs);
  return {
    async getWorker(request) {
      return durable(store, { worker: await coordinator.getWorker(requireId("worker_id", request.workerId)) });
    },
    async listWorkers(request) {
      const filter = {
        statuses: requireEnumValues("statuses", request.statuses, WorkerStatus),
        idContains: request.workerIdContains,
        labels: request.labels,
        expression: requireFilter(request.filter, WorkerSchema, clock.now()),
      };
      requireBoundedLabels("labels", request.labels, limits);
      const query = listQuery(request, filter, WORKER_SORT_FIELDS, "worker_id", "worker_id");
      const page = await store.listWorkers(query);
      const workers = fitToBytes(page.items, (w) => toBinary(WorkerSchema, w).byteLength, limits.maxResponseBytes);
      return durable(store, {
        workers,
        totalSize: page.total,
        nextPageToken: nextPageToken(query, page.total, workers.length),
        heartbeatGrace,
      });
    },
    async getWorkerHistory(request) {
      const workerId = requireId("worker_id", request.workerId);
      await coordinator.getWorker(workerId); // NOT_FOUND for a worker the server never heard of
      return { samples: history.samples(workerId) };
    },
    async sendHeartbeat(request) {
      const workerId = requireClientId("worker_id", request.workerId);
      requireJsonSafe(SendHeartbeatRequestSchema, request);
      const extraStats = boundedExtraStats(request.extraStats);
      const admission = heartbeats.admit(workerId);
      if (admission === "refuse") throw new DomainError("resource_exhausted", heartbeats.refusal(workerId));
      if (admission === "coalesce") return { worker: await coordinator.getWorker(workerId) };
      return { worker: await coordinator.heartbeat(workerId, { snapshot: request.snapshot, extraStats }) };
    },
    async releaseWorker(request) {
      return { worker: await coordinator.releaseWorker(requireId("worker_id", request.workerId)) };
    },
    async cordonWorker(request, context) {
      const workerId = requireId("worker_id", request.workerId);
      const reason = requireCordonReason("reason", request.reason);
      return { worker: await coordinator.cordonWorker(workerId, { reason, by: context.values.get(callerNameKey) }) };
    },
    async uncordonWorker(request) {
      return { worker: await coordinator.uncordonWorker(requireId("worker_id", request.workerId)) };
    },
    async drainWorker(request, context) {
      const workerId = requireId("worker_id", request.workerId);
      const reason = requireCordonReason("reason", request.reason);
      return { worker: await coordinator.drainWorker(workerId, { reason, by: context.values.get(callerNameKey) }) };
    },
    async *watchWorkers(request, context) {
      const filter = {
        statuses: requireEnumValues("statuses", request.statuses, WorkerStatus),
        idContains: request.workerIdContains,
        labels: {},
        expression: requireFilter(request.filter, WorkerSchema, clock.now()),
      };
      const changes: Worker[] = [];
      let wake: (() => void) | undefined;
      let overflowed = false;
      const unsubscribe = coordinator.watchWorkers((worker) => {
        if (!matchesWorker(filter, worker)) return;
        if (changes.length >= WATCH_BUFFER_LIMIT) overflowed = true;
        else changes.push(worker);
        wake?.();
      });
      const onAbort = () => wake?.();
      context.signal.addEventListener("abort", onAbort);
      try {
        if (request.changesOnly) {
          // Subscribed above: tells the client it may list now without missing a change.
          yield create(WatchWorkersResponseSchema, {});
        } else {
          const everything = { offset: 0, limit: Number.MAX_SAFE_INTEGER };
          const initial = await store.listWorkers({ filter, orderBy: [{ field: "worker_id", descending: false }], ...everything });
          for (const worker of initial.items) yield watchMessage(worker, true);
        }
        while (!context.signal.aborted) {
          if (overflowed) throw new DomainError("resource_exhausted", "watch client fell too far behind; reconnect");
          const next = changes.shift();
          if (next !== undefined) {
            yield watchMessage(next, false);
            continue;
          }
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
        }
      } finally {
        unsubscribe();
        context.signal.removeEventListener("abort", onAbort);
      }
    },
    async getFleetSummary() {
      return { summary: fleetSummary !== undefined ? await fleetSummary() : fleet.summary() };
    },
    async deleteWorker(request) {
      await retention.deleteWorker(requireId("worker_id", request.workerId));
      return {};
    },
  };
}

function watchMessage(worker: Worker, initial: boolean): WatchWorkersResponse {
  return create(WatchWorkersResponseSchema, { worker, initial });
}
