import type { Attempt } from "../../gen/runnerline/v1/attempt_pb.js";
import type { Rollout } from "../../gen/runnerline/v1/rollout_pb.js";
import type { Worker, WorkerStatus } from "../../gen/runnerline/v1/worker_pb.js";
import type { Millis } from "../domain/time.js";
import type { Labels } from "../domain/labels.js";
import type { WorkerRecord } from "../domain/worker.js";
import type { Changes } from "../transitions/changes.js";
import type {
  AttemptStep,
  ClaimRequest,
  Claimed,
  RolloutStep,
  SessionFence,
  TransitionContext,
  WorkerStep,
} from "../transitions/steps.js";
import type { AttemptFilter, ListQuery, Page, RolloutFilter, WorkerFilter } from "./query.js";

/**
 * Where state lives, behind one seam that an embedded store (memory, SQLite)
 * and a shared database serve alike.
 *
 * Reads are asynchronous. Writes are atomic operations named after what they
 * do; each is one transaction that reads the rows it names, applies a pure
 * step from src/server/transitions (the same code on every store: no store
 * re-implements a rule) and writes what the step changed, or nothing at all.
 * Each returns the Changes it wrote, which is what the coordinator acts on.
 *
 * Fences: an operation made on behalf of a runner session carries the
 * session's epoch (WorkerRecord.epoch, raised by every Hello); when a newer
 * session of the worker has moved it on, the operation changes nothing and
 * fails with ABORTED. That is what lets several writers share one store.
 *
 * Durability: an operation's result is visible to every later read at once;
 * it is durable when a `commit()` called after it resolves. Embedded stores
 * group the operations of one event-loop turn into one transaction; a shared
 * database commits each operation before it resolves, and `commit()` is then
 * immediate.
 */
export interface Store {
  // ---- reads ----------------------------------------------------------------
  getRollout(rolloutId: string): Promise<Rollout | undefined>;
  /** The rollouts among `rolloutIds` that exist, in any order. */
  getRollouts(rolloutIds: readonly string[]): Promise<Rollout[]>;
  listRollouts(query: ListQuery<RolloutFilter>): Promise<Page<Rollout>>;
  getAttempt(attemptId: string): Promise<Attempt | undefined>;
  listAttempts(query: ListQuery<AttemptFilter>): Promise<Page<Attempt>>;
  /** Every attempt of the given rollouts, by rollout id, each rollout's oldest first (one read, whatever their number). */
  attemptsOfRollouts(rolloutIds: readonly string[]): Promise<Map<string, Attempt[]>>;
  getWorker(workerId: string): Promise<WorkerRecord | undefined>;
  listWorkers(query: ListQuery<WorkerFilter>): Promise<Page<Worker>>;
  workersWithStatus(statuses: WorkerStatus[]): Promise<WorkerRecord[]>;
  /** The labels of every worker that holds a session now, on whichever server (worker id → labels). */
  attachedWorkerLabels(): Promise<Map<string, Labels>>;
  /** Attempts that are PREPARING or RUNNING, for the watchdog. */
  activeAttempts(): Promise<Attempt[]>;
  /** Every queued rollout, front to back (the durable dispatch order). */
  queuedRollouts(): Promise<Rollout[]>;
  /** The ids of queuedRollouts, without reading the rollouts. */
  queuedRolloutIds(): Promise<string[]>;
  queueLength(): Promise<number>;
  /**
   * Retention: up to `limit` finished rollouts (SUCCEEDED, FAILED, CANCELLED)
   * that ended before `cutoff` (ms since the epoch).
   */
  finishedRolloutsBefore(cutoff: Millis, limit: number): Promise<Rollout[]>;
  /** Up to `limit` OFFLINE workers last heard from (heartbeat, else connect, else creation) before `cutoff`. */
  offlineWorkersSilentSince(cutoff: Millis, limit: number): Promise<WorkerRecord[]>;

  // ---- atomic operations ----------------------------------------------------
  /** Adds new rollouts at the back of the queue, all or none (ALREADY_EXISTS when an id is taken). */
  enqueueRollouts(rollouts: Rollout[]): Promise<Changes>;
  /**
   * Claims queued rollouts for a session: for each one still queued, creates
   * its next attempt for the worker and dispatches it (the worker holds it).
   * Rollouts no longer queued are skipped.
   */
  claimRollouts(request: ClaimRequest): Promise<{ claimed: Claimed[]; changes: Changes }>;
  /** Changes an attempt; its worker and its rollout follow in the same step. */
  changeAttempt(attemptId: string, fence: SessionFence | undefined, step: AttemptStep, context: TransitionContext): Promise<Changes>;
  /** Changes a rollout from outside its attempts (cancel, expiry); its active attempt and worker follow. */
  changeRollout(rolloutId: string, step: RolloutStep, context: TransitionContext): Promise<Changes>;
  /** Changes (or creates) a worker: sessions, heartbeats, quarantine. */
  changeWorker(workerId: string, fence: SessionFence | undefined, step: WorkerStep): Promise<Changes>;
  /** A queued rollout whose retry delay has passed goes to the back of the queue. */
  moveToBackOfQueue(rolloutId: string): Promise<void>;
  /** Removes a rollout with all its attempts (and its queue entry, if any). */
  deleteRollout(rolloutId: string): Promise<void>;
  deleteWorker(workerId: string): Promise<void>;

  /** Resolves when every operation made so far is durable. */
  commit(): Promise<void>;
  close(): Promise<void>;
}
