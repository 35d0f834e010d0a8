import { WorkerStatus } from "../../gen/runnerline/v1/worker_pb.js";
import { type Millis, msOf } from "./time.js";
import { type Liveness, lastHeardMs, settle, type WorkerRecord } from "./worker.js";

/**
 * Runners that never leave (a runner killed with -9 stays UNKNOWN for good):
 * after `forgetAfterMs` of silence, an UNKNOWN worker with no attempts is
 * forgotten — it turns OFFLINE with a reason, and retention removes it
 * later like any OFFLINE worker (Temporal's Inactive → CleanedUp, the
 * Kubernetes node lifecycle). Judged from stored timestamps only, so it
 * holds on every store and across restarts.
 */

/** The last moment anything was heard of the worker, its session's end and its creation included. */
export function silentSince(record: WorkerRecord): Millis {
  const { worker } = record;
  const times = [lastHeardMs(worker), msOf(worker.disconnectTime), msOf(worker.createTime)];
  return Math.max(...times.map((t) => t ?? -Infinity));
}

/**
 * When the worker may be forgotten, or undefined when silence alone never
 * forgets it: it is not UNKNOWN, holds attempts (they are settled by their
 * own timeouts first), or holds a session (its heartbeats and keepalive
 * speak for it).
 */
export function forgetDue(record: WorkerRecord, forgetAfterMs: Millis): Millis | undefined {
  if (record.worker.status !== WorkerStatus.UNKNOWN || record.attachment === "open") return undefined;
  if (record.worker.currentAttemptIds.length > 0) return undefined;
  const since = silentSince(record);
  return Number.isFinite(since) ? since + forgetAfterMs : undefined;
}

/** The worker, OFFLINE with the reason, when it is due to be forgotten at `now`; otherwise unchanged. */
export function forgetWorker(record: WorkerRecord, forgetAfterMs: Millis, liveness: Liveness, now: Millis): WorkerRecord {
  const due = forgetDue(record, forgetAfterMs);
  if (due === undefined || now < due) return record;
  const silentFor = Math.round((now - silentSince(record)) / 1000);
  const statusReason =
    `forgotten: UNKNOWN with no attempts and silent for ${silentFor} s (--forget-after ${Math.round(forgetAfterMs / 1000)} s); ` +
    `it is OFFLINE until it connects again`;
  return settle({ ...record, attachment: "left", suspect: false, worker: { ...record.worker, statusReason } }, liveness, now, true);
}
