import type { WorkerRecord } from "../../domain/worker.js";
import { encodeTelemetry, withTelemetry } from "../worker-telemetry.js";

/** Worker records kept for the heartbeat path; beyond this many the oldest are forgotten (they are re-read). */
const RECENT_WORKERS = 50_000;

/**
 * The PostgreSQL store's heartbeat path (docs/scaleout.md): the last state of
 * each worker this server wrote or read, from which a change of telemetry
 * only (heartbeats, work requests) is computed without a transaction, and the
 * telemetry held back until the next flush writes it in one batch. A worker
 * read from the database gets the telemetry held for it laid over it; a
 * transaction that wrote the worker with that telemetry took it along.
 */
export class HeldTelemetry {
  private readonly recent = new Map<string, WorkerRecord>();
  private pending = new Map<string, WorkerRecord>();

  /** The worker as this server last saw it, if it remembers. */
  known(workerId: string): WorkerRecord | undefined {
    return this.recent.get(workerId);
  }

  /** A change of telemetry only: held back for the next flush, and the worker's latest state. */
  hold(record: WorkerRecord) {
    this.pending.set(record.worker.workerId, record);
    this.remember(record);
  }

  /** A worker read from the database, with the telemetry held back for it laid over it. */
  overlay(record: WorkerRecord): WorkerRecord {
    const pending = this.pending.get(record.worker.workerId);
    if (pending === undefined) return record;
    return { ...record, worker: withTelemetry(record.worker, encodeTelemetry(pending.worker)) };
  }

  /** The worker's latest state, as read or written. */
  remember(record: WorkerRecord): WorkerRecord {
    const id = record.worker.workerId;
    this.recent.delete(id);
    this.recent.set(id, record);
    if (this.recent.size > RECENT_WORKERS) this.recent.delete(this.recent.keys().next().value!);
    return record;
  }

  /**
   * A transaction committed the worker; `seen` is the held record its locked
   * read carried (its telemetry went with it), which is then no longer held
   * unless newer telemetry came meanwhile.
   */
  written(record: WorkerRecord, seen: WorkerRecord | undefined) {
    this.remember(record);
    if (this.pending.get(record.worker.workerId) === seen) this.pending.delete(record.worker.workerId);
  }

  /** Takes everything held, for a flush; none when nothing is. */
  take(): WorkerRecord[] {
    if (this.pending.size === 0) return [];
    const records = [...this.pending.values()];
    this.pending = new Map();
    return records;
  }

  /** A flush failed: its records are held again, unless newer telemetry came meanwhile. */
  restore(records: readonly WorkerRecord[]) {
    for (const record of records) if (!this.pending.has(record.worker.workerId)) this.pending.set(record.worker.workerId, record);
  }
}
