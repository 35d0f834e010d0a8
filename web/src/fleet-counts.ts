// Header counts, from WorkerService.GetFleetSummary: one call that the server
// answers from its own tallies (the header polls it). This is the pure
// mapping, unit-tested in test/web/fleet-counts.test.ts.
import type { Duration } from "@bufbuild/protobuf/wkt";
import type { FleetSummary } from "../../src/gen/runnerline/v1/worker_pb.js";

export interface FleetCounts {
  idle: number;
  busy: number;
  unknown: number;
  offline: number;
  /** Kept from new work after repeated failures (any status). */
  quarantined: number;
  /** Kept from new work by an operator (CordonWorker, DrainWorker; any status). */
  cordoned: number;
  /** Rollouts waiting for a runner: QUEUING plus REQUEUING. */
  queueDepth: number;
  /** How long the longest-waiting queued rollout has waited; undefined when the queue is empty. */
  oldestQueuedMs: number | undefined;
  /** Queued rollouts that no connected runner carries the required labels for. */
  unroutable: number;
  /** PREPARING plus RUNNING. */
  running: number;
  succeeded: number;
  failed: number;
  cancelled: number;
}

export function durationMs(duration: Duration | undefined): number | undefined {
  return duration === undefined ? undefined : Number(duration.seconds) * 1000 + Math.floor(duration.nanos / 1e6);
}

export function fleetCountsFromSummary(summary: FleetSummary | undefined): FleetCounts {
  const w = summary?.workers;
  const r = summary?.rollouts;
  return {
    idle: w?.idle ?? 0,
    busy: w?.busy ?? 0,
    unknown: w?.unknown ?? 0,
    offline: w?.offline ?? 0,
    quarantined: w?.quarantined ?? 0,
    cordoned: w?.cordoned ?? 0,
    queueDepth: summary?.queueDepth ?? 0,
    oldestQueuedMs: durationMs(summary?.oldestQueuedAge),
    unroutable: summary?.unroutableQueued ?? 0,
    running: (r?.preparing ?? 0) + (r?.running ?? 0),
    succeeded: r?.succeeded ?? 0,
    failed: r?.failed ?? 0,
    cancelled: r?.cancelled ?? 0,
  };
}
