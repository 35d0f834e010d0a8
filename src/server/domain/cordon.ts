import type { Worker } from "../../gen/runnerline/v1/worker_pb.js";
import { failedPrecondition, invalidArgument } from "./errors.js";
import { type Millis, toTimestamp } from "./time.js";
import type { WorkerRecord } from "./worker.js";

/**
 * An operator's cordon (WorkerService.CordonWorker, UncordonWorker,
 * DrainWorker): a worker kept from new work for maintenance, as Kubernetes
 * cordons and drains a node. Unlike a quarantine it has no end of its own and
 * is not about the worker's health: it lasts until an operator lifts it. A
 * drain also asks the worker's runner to finish what it holds and exit.
 * Stored with the worker (its message), so a restart, a reconnect and every
 * server sharing the store see it.
 */

/** Longest reason an operator may give (it is stored with the worker and shown on every listing). */
export const MAX_CORDON_REASON_LENGTH = 1024;

/** Who cordons and why. */
export interface CordonRequest {
  /** May be empty. */
  reason: string;
  /** Name of the caller's token; empty on a server without tokens. */
  by: string;
}

/** The worker may take no new work: an operator cordoned it. */
export function isCordoned(worker: Worker): boolean {
  return worker.cordoned;
}

/** The reason as given, refused when it is longer than MAX_CORDON_REASON_LENGTH. */
export function requireCordonReason(field: string, reason: string): string {
  if (reason.length > MAX_CORDON_REASON_LENGTH) {
    throw invalidArgument(`${field} is ${reason.length} characters long; at most ${MAX_CORDON_REASON_LENGTH}`);
  }
  return reason;
}

/** Cordons the worker; one already cordoned stays as it is (who, why and when of the first cordon). */
export function cordonWorker(record: WorkerRecord, request: CordonRequest, now: Millis): WorkerRecord {
  if (record.worker.cordoned) return record;
  return {
    ...record,
    worker: {
      ...record.worker,
      cordoned: true,
      cordonReason: request.reason,
      cordonTime: toTimestamp(now),
      cordonedBy: request.by,
      version: record.worker.version + 1n,
    },
  };
}

/** Lifts the cordon and any drain; a worker that is neither stays as it is. */
export function uncordonWorker(record: WorkerRecord): WorkerRecord {
  const worker = record.worker;
  if (!worker.cordoned && !worker.draining) return record;
  return {
    ...record,
    worker: {
      ...worker,
      cordoned: false,
      cordonReason: "",
      cordonTime: undefined,
      cordonedBy: "",
      draining: false,
      version: worker.version + 1n,
    },
  };
}

/**
 * Cordons the worker (unless it is) and marks it draining: its runner is to
 * finish what it holds and exit. Refused for a worker without a runner
 * session to tell: one that left (OFFLINE), or one only ever seen through
 * unary calls. A worker whose stream was lost hears it when it reconnects.
 */
export function drainWorker(record: WorkerRecord, request: CordonRequest, now: Millis): WorkerRecord {
  const refusal = drainRefusal(record);
  if (refusal !== undefined) throw failedPrecondition(refusal);
  if (record.worker.draining) return record;
  const cordoned = cordonWorker(record, request, now);
  return { ...cordoned, worker: { ...cordoned.worker, draining: true, version: record.worker.version + 1n } };
}

function drainRefusal(record: WorkerRecord): string | undefined {
  const id = record.worker.workerId;
  switch (record.attachment) {
    case "none":
      return `worker ${id} has never opened a runner session, so there is no runner to drain; CordonWorker keeps it from new work`;
    case "left":
      return `worker ${id} has left (said Goodbye): there is no runner to drain; CordonWorker keeps it from new work when it returns`;
    default:
      return undefined;
  }
}

/** The drained runner left with Goodbye: the drain is over, the cordon stays until an operator lifts it. */
export function drainEnded(record: WorkerRecord): WorkerRecord {
  if (!record.worker.draining) return record;
  return { ...record, worker: { ...record.worker, draining: false } };
}
