import type { Attempt, AttemptErrorKind } from "../../gen/runnerline/v1/attempt_pb.js";
import type { Rollout } from "../../gen/runnerline/v1/rollout_pb.js";
import { abortAttempt, isAttemptActive, newAttempt } from "../domain/attempt.js";
import { isCordoned } from "../domain/cordon.js";
import { DomainError, notFound } from "../domain/errors.js";
import { dispatchRollout, followAttempt, isRolloutQueued } from "../domain/rollout.js";
import type { Millis } from "../domain/time.js";
import { holdAttempt, holdAttempts, type Liveness, newWorkerRecord, releaseAttempt, type WorkerRecord } from "../domain/worker.js";
import { AttemptStatus } from "../../gen/runnerline/v1/attempt_pb.js";
import type { WorkingSet } from "./changes.js";

/**
 * The store operations' logic, once for every store: each function reads the
 * rows it needs from a WorkingSet, applies domain rules (pure functions of
 * src/server/domain) and writes the results back to it. A store runs one of
 * these inside one transaction and persists the WorkingSet's changes; a
 * DomainError thrown here aborts the operation with nothing written.
 */

/** Who an operation acts for: a runner session, fenced by the epoch its Hello got. */
export interface SessionFence {
  readonly workerId: string;
  readonly epoch: number;
}

/** Decides an attempt's next state (a domain function); returning it unchanged writes nothing. */
export type AttemptStep = (attempt: Attempt, rollout: Rollout | undefined) => Attempt;

/** A rollout ended from outside its attempts: its new state, and how its active attempt (if any) ends. */
export interface RolloutEnding {
  readonly after: Rollout;
  readonly attemptErrorKind: AttemptErrorKind.CANCELLED | AttemptErrorKind.DEADLINE_EXCEEDED;
  readonly reason: string;
}
/** Decides how a rollout ends now, or undefined when it does not. */
export type RolloutStep = (rollout: Rollout) => RolloutEnding | undefined;

/** Decides a worker's next state; `record` is undefined for a worker the store has not seen. */
export type WorkerStep = (record: WorkerRecord | undefined) => WorkerRecord;

export interface TransitionContext {
  readonly now: Millis;
  readonly liveness: Liveness;
}

export interface ClaimRequest extends TransitionContext {
  /** The session claiming; `epoch` undefined for a unary dequeue, which no session fences. */
  readonly workerId: string;
  readonly epoch: number | undefined;
  /** Candidates in the order the worker should get them. */
  readonly rolloutIds: readonly string[];
  /** Makes the id of each new attempt. */
  readonly newAttemptId: () => string;
}

export interface Claimed {
  readonly rollout: Rollout;
  readonly attempt: Attempt;
}

/** The ABORTED refusal of a write made for a session that a newer one replaced. */
export function staleSession(workerId: string): DomainError {
  return new DomainError("aborted", `the session of worker ${workerId} was replaced by a newer one; this one can change nothing`);
}

/** Refuses the operation when a newer session of the worker has moved its epoch on. */
export function checkFence(rows: WorkingSet, fence: SessionFence | undefined) {
  if (fence === undefined) return;
  if ((rows.worker(fence.workerId)?.epoch ?? 0) !== fence.epoch) throw staleSession(fence.workerId);
}

/** The FAILED_PRECONDITION refusal of a claim for a worker an operator cordoned (domain/cordon.ts). */
export class WorkerCordonedError extends DomainError {
  constructor(readonly workerId: string) {
    super("failed_precondition", `worker ${workerId} is cordoned: it takes no new work until UncordonWorker`);
  }
}

/**
 * Creates the next attempt of each still-queued candidate for the worker,
 * which holds them. Refused for a cordoned worker: the cordon is read in the
 * same operation, so one set on another server holds even before this one
 * has heard of it.
 */
export function claim(rows: WorkingSet, request: ClaimRequest): Claimed[] {
  const { workerId, now, liveness } = request;
  if (request.epoch !== undefined) checkFence(rows, { workerId, epoch: request.epoch });
  const holder = rows.worker(workerId);
  if (holder !== undefined && isCordoned(holder.worker)) throw new WorkerCordonedError(workerId);
  const claimed: Claimed[] = [];
  for (const rolloutId of request.rolloutIds) {
    const rollout = rows.rollout(rolloutId);
    if (rollout === undefined || !isRolloutQueued(rollout.status)) continue;
    let attemptId = request.newAttemptId();
    while (rows.attempt(attemptId) !== undefined) attemptId = request.newAttemptId();
    const attempt = newAttempt(rollout, attemptId, workerId, now);
    rows.setAttempt(attempt);
    const dispatched = dispatchRollout(rollout, attempt, now);
    rows.setRollout(dispatched);
    claimed.push({ rollout: dispatched, attempt });
  }
  // The worker takes them all in one change (one copy of its record, however many it claimed).
  if (claimed.length > 0) {
    const attempts = claimed.map((c) => c.attempt);
    rows.setWorker(holdAttempts(holder ?? newWorkerRecord(workerId, now), attempts, liveness, now));
  }
  return claimed;
}

/** Applies `step` to an attempt; its worker and rollout follow. */
export function changeAttempt(
  rows: WorkingSet,
  attemptId: string,
  fence: SessionFence | undefined,
  step: AttemptStep,
  context: TransitionContext,
) {
  checkFence(rows, fence);
  const before = rows.attempt(attemptId);
  if (before === undefined) throw notFound(`attempt ${attemptId} not found`);
  const after = step(before, rows.rollout(before.rolloutId));
  if (after !== before) followAttemptChange(rows, before, after, context);
}

/**
 * An attempt changed: a worker holds its active attempts and lets go of the
 * others (a lost one leaves it suspect), and the rollout follows its latest
 * attempt (followAttempt ignores any other).
 */
export function followAttemptChange(rows: WorkingSet, before: Attempt, after: Attempt, { now, liveness }: TransitionContext) {
  rows.setAttempt(after);
  const wasActive = isAttemptActive(before.status);
  const isActive = isAttemptActive(after.status);
  if (wasActive !== isActive) {
    const record = rows.worker(after.workerId) ?? newWorkerRecord(after.workerId, now);
    const lost = after.status === AttemptStatus.TIMEOUT || after.status === AttemptStatus.UNRESPONSIVE;
    rows.setWorker(isActive ? holdAttempt(record, after, liveness, now) : releaseAttempt(record, after, lost, liveness, now));
  }
  const rollout = rows.rollout(after.rolloutId);
  if (rollout !== undefined) rows.setRollout(followAttempt(rollout, after, now));
}

/** Ends a rollout from outside (`step`); its active attempt fails with the ending's kind. Returns that attempt. */
export function changeRollout(rows: WorkingSet, rolloutId: string, step: RolloutStep, context: TransitionContext): Attempt | undefined {
  const before = rows.rollout(rolloutId);
  if (before === undefined) throw notFound(`rollout ${rolloutId} not found`);
  const ending = step(before);
  if (ending === undefined) return undefined;
  rows.setRollout(ending.after);
  const attempt = before.latestAttemptId ? rows.attempt(before.latestAttemptId) : undefined;
  if (attempt === undefined || !isAttemptActive(attempt.status)) return undefined;
  const aborted = abortAttempt(attempt, ending.attemptErrorKind, ending.reason, context.now);
  followAttemptChange(rows, attempt, aborted, context);
  return aborted;
}

/** Applies `step` to a worker (creating it when the store has not seen it). */
export function changeWorker(rows: WorkingSet, workerId: string, fence: SessionFence | undefined, step: WorkerStep) {
  checkFence(rows, fence);
  const before = rows.worker(workerId);
  const after = step(before);
  if (after !== before) rows.setWorker(after);
}
