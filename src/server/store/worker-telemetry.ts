import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Worker, WorkerSchema } from "../../gen/runnerline/v1/worker_pb.js";
import type { WorkerRecord } from "../domain/worker.js";

/**
 * A worker's telemetry — what heartbeats and work requests change — apart
 * from the rest of it, so that a shared database can take it in batches,
 * written behind and off the heartbeat path, while transitions write the rest
 * in place (docs/scaleout.md). The telemetry, encoded on its own, overrides
 * the same fields of the worker's message when both are read.
 */
type TelemetryField = "lastHeartbeatTime" | "lastDequeueTime" | "snapshot" | "extraStats";

export function encodeTelemetry(worker: Worker): Uint8Array {
  return toBinary(WorkerSchema, create(WorkerSchema, telemetryOf(worker)));
}

/** The worker's message with its telemetry laid over it (when there is telemetry). */
export function withTelemetry(worker: Worker, telemetry: Uint8Array | null | undefined): Worker {
  if (telemetry === null || telemetry === undefined) return worker;
  return Object.assign(worker, telemetryOf(fromBinary(WorkerSchema, telemetry)));
}

/**
 * Whether `after` differs from `before` only in telemetry: no status,
 * version, session, suspicion or quarantine change, and the same held
 * attempts. Such a change may be written behind.
 */
export function onlyTelemetryChanged(before: WorkerRecord, after: WorkerRecord): boolean {
  if (before.attachment !== after.attachment || before.suspect !== after.suspect || before.epoch !== after.epoch) return false;
  const b = before.worker;
  const a = after.worker;
  for (const key of Object.keys(a) as (keyof Worker)[]) {
    if (key === "lastHeartbeatTime" || key === "lastDequeueTime" || key === "snapshot" || key === "extraStats") continue;
    if (a[key] !== b[key]) return false;
  }
  return true;
}

function telemetryOf(worker: Worker): Pick<Worker, TelemetryField> {
  return {
    lastHeartbeatTime: worker.lastHeartbeatTime,
    lastDequeueTime: worker.lastDequeueTime,
    snapshot: worker.snapshot,
    extraStats: worker.extraStats,
  };
}
