import type { Attempt } from "../../gen/runnerline/v1/attempt_pb.js";
import type { Rollout } from "../../gen/runnerline/v1/rollout_pb.js";
import type { Worker, WorkerStatus } from "../../gen/runnerline/v1/worker_pb.js";
import type { WorkerRecord } from "../domain/worker.js";
import type { AttemptFilter, ListQuery, Page, RolloutFilter, WorkerFilter } from "./query.js";

/**
 * The rows of an embedded store (memory, SQLite), read and written
 * synchronously inside the process: persistence only, no rules.
 * EmbeddedStore runs the store operations on top of it; `commit()` resolves
 * once everything written so far is durable.
 *
 * Puts are told the row as the operation read it (`before`, undefined for a
 * new row), so a table may write only what changed: insert once, then update
 * the changed columns in place.
 */
export interface Tables {
  getRollout(rolloutId: string): Rollout | undefined;
  putRollout(rollout: Rollout, before?: Rollout): void;
  listRollouts(query: ListQuery<RolloutFilter>): Page<Rollout>;

  getAttempt(attemptId: string): Attempt | undefined;
  putAttempt(attempt: Attempt, before?: Attempt): void;
  listAttempts(query: ListQuery<AttemptFilter>): Page<Attempt>;
  /** Attempts that are PREPARING or RUNNING, for the watchdog. */
  activeAttempts(): Attempt[];

  getWorker(workerId: string): WorkerRecord | undefined;
  putWorker(record: WorkerRecord, before?: WorkerRecord): void;
  listWorkers(query: ListQuery<WorkerFilter>): Page<Worker>;
  workersWithStatus(statuses: WorkerStatus[]): WorkerRecord[];

  /**
   * The dispatch queue's order, kept durably; the coordinator picks from its
   * own index (dispatch/reactions/dispatch-queue.ts) and rebuilds it from the store at start.
   * pushQueue appends a rollout at the back (moving it there if queued already).
   */
  pushQueue(rolloutId: string): void;
  removeFromQueue(rolloutId: string): void;
  /** Every queued rollout id, front to back. */
  queuedRolloutIds(): string[];
  queueLength(): number;

  /**
   * Retention: up to `limit` finished rollouts (SUCCEEDED, FAILED, CANCELLED)
   * that ended before `cutoff` (ms since the epoch).
   */
  finishedRolloutsBefore(cutoff: number, limit: number): Rollout[];
  /** Removes a rollout with all its attempts (and its queue entry, if any). */
  deleteRollout(rolloutId: string): void;
  /** Up to `limit` OFFLINE workers last heard from (heartbeat, else connect, else creation) before `cutoff`. */
  offlineWorkersSilentSince(cutoff: number, limit: number): WorkerRecord[];
  deleteWorker(workerId: string): void;

  /** Resolves when every write made so far is durable. */
  commit(): Promise<void>;
  close(): Promise<void>;
}
