import type { Attempt } from "../../gen/runnerline/v1/attempt_pb.js";
import type { Rollout } from "../../gen/runnerline/v1/rollout_pb.js";
import type { Worker, WorkerStatus } from "../../gen/runnerline/v1/worker_pb.js";
import type { WorkerRecord } from "../domain/worker.js";
import type { AttemptFilter, ListQuery, Page, RolloutFilter, WorkerFilter } from "./query.js";

/**
 * Persistence only, no rules: the coordinator decides every transition and the
 * store keeps the result. Reads and writes are synchronous (both the memory
 * and the SQLite store are in-process); `commit()` resolves once everything
 * written so far is durable, which is when the coordinator may act on it.
 */
export interface Store {
  getRollout(rolloutId: string): Rollout | undefined;
  putRollout(rollout: Rollout): void;
  listRollouts(query: ListQuery<RolloutFilter>): Page<Rollout>;

  getAttempt(attemptId: string): Attempt | undefined;
  putAttempt(attempt: Attempt): void;
  listAttempts(query: ListQuery<AttemptFilter>): Page<Attempt>;
  /** Attempts that are PREPARING or RUNNING, for the watchdog. */
  activeAttempts(): Attempt[];

  getWorker(workerId: string): WorkerRecord | undefined;
  putWorker(record: WorkerRecord): void;
  listWorkers(query: ListQuery<WorkerFilter>): Page<Worker>;
  workersWithStatus(statuses: WorkerStatus[]): WorkerRecord[];

  /**
   * The dispatch queue's order, kept durably; the coordinator picks from its
   * own index (dispatch-queue.ts) and rebuilds it from queuedRolloutIds at start.
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
