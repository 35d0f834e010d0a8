import type { Attempt } from "../../../gen/runnerline/v1/attempt_pb.js";
import type { Rollout } from "../../../gen/runnerline/v1/rollout_pb.js";
import { rolloutEffects } from "../../domain/rollout.js";
import { type Changes, type RowReader, WorkingSet } from "../../transitions/changes.js";
import {
  type AttemptStep,
  type ClaimRequest,
  type Claimed,
  changeAttempt,
  changeRollout,
  changeWorker,
  claim,
  type RolloutStep,
  type SessionFence,
  type TransitionContext,
  type WorkerStep,
} from "../../transitions/steps.js";

/**
 * One turn on PostgreSQL: the transitions asked for in one event-loop turn
 * (reports, cancels, worker changes, claims for every session with credits)
 * run in ONE transaction with a fixed number of round trips, whatever their
 * number: lock every rollout the turn names (two statements: those named
 * through their attempts, then the others, claims' with SKIP LOCKED), every
 * attempt (one), every worker (one); apply the pure steps in arrival order to
 * one working set, each seeing the ones before it; write every changed row
 * (one statement); commit. Each caller gets its own operation's changes, as
 * if it had run alone; an operation whose step refuses (a DomainError) fails
 * alone and changes nothing.
 */

/** A transition waiting for its turn, with how to answer its caller. */
export type TurnOperation =
  | { kind: "attempt"; attemptId: string; fence: SessionFence | undefined; step: AttemptStep; context: TransitionContext; done: Settle<Changes> }
  | { kind: "rollout"; rolloutId: string; step: RolloutStep; context: TransitionContext; done: Settle<Changes> }
  | { kind: "worker"; workerId: string; fence: SessionFence | undefined; step: WorkerStep; done: Settle<Changes> }
  | { kind: "claim"; request: ClaimRequest; done: Settle<{ claimed: Claimed[]; changes: Changes }> };

export interface Settle<T> {
  resolve(value: T): void;
  reject(error: unknown): void;
}

/** What a turn needs of a transaction: batched locks, the locked rows, and one write of all changes. */
export interface TurnTransaction {
  readonly rows: RowReader;
  /** Locks these rollouts and those of these attempts, in one statement; returns them. */
  lockRolloutsAndThoseOfAttempts(rolloutIds: readonly string[], attemptIds: readonly string[]): Promise<Rollout[]>;
  lockRollouts(ids: readonly string[], only?: "queued"): Promise<Rollout[]>;
  lockAttempts(ids: readonly string[]): Promise<Attempt[]>;
  lockWorkers(ids: readonly string[]): Promise<void>;
  /** Writes the turn's changes; `requeued` rollouts went back to the queue during the turn (a new queue place). */
  persist(changes: Changes, requeued: ReadonlySet<string>): Promise<void>;
}

/** Results of a turn's operations, handed to their callers once the turn has committed. */
type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/**
 * Locks what the operations name, one statement per table, in the order
 * rollouts → attempts → workers and by id within each (as every operation
 * does): two turns never wait on each other in a cycle. Claims' rollouts are
 * taken with SKIP LOCKED, so they never wait at all.
 */
async function lockAll(tx: TurnTransaction, ops: readonly TurnOperation[]) {
  const attemptIds: string[] = [];
  const rolloutIds: string[] = [];
  const queuedIds: string[] = [];
  const workerIds: string[] = [];
  for (const op of ops) {
    if (op.kind === "attempt") {
      attemptIds.push(op.attemptId);
      if (op.fence !== undefined) workerIds.push(op.fence.workerId);
    } else if (op.kind === "rollout") rolloutIds.push(op.rolloutId);
    else if (op.kind === "worker") workerIds.push(op.workerId);
    else {
      queuedIds.push(...op.request.rolloutIds);
      workerIds.push(op.request.workerId);
    }
  }
  const rollouts = rolloutIds.length + attemptIds.length === 0 ? [] : await tx.lockRolloutsAndThoseOfAttempts(rolloutIds, attemptIds);
  // Rows another server is claiming right now are skipped, not waited for: they are not queued for us.
  if (queuedIds.length > 0) await tx.lockRollouts(queuedIds, "queued");
  const named = new Set(rolloutIds);
  const latest = rollouts.filter((r) => named.has(r.rolloutId) && r.latestAttemptId !== "").map((r) => r.latestAttemptId);
  const attempts = attemptIds.length + latest.length === 0 ? [] : await tx.lockAttempts([...attemptIds, ...latest]);
  for (const attempt of attempts) if (attempt.workerId !== "") workerIds.push(attempt.workerId);
  if (workerIds.length > 0) await tx.lockWorkers(workerIds);
}

/** Applies one operation to its own working set over the turn's; returns its changes and its answer. */
function apply(turn: WorkingSet, op: TurnOperation): { changes: Changes; value: unknown } {
  const rows = new WorkingSet(turn);
  let value: unknown;
  switch (op.kind) {
    case "attempt":
      changeAttempt(rows, op.attemptId, op.fence, op.step, op.context);
      break;
    case "rollout":
      changeRollout(rows, op.rolloutId, op.step, op.context);
      break;
    case "worker":
      changeWorker(rows, op.workerId, op.fence, op.step);
      break;
    case "claim":
      value = claim(rows, op.request);
      break;
  }
  const changes = rows.changes();
  return { changes, value: op.kind === "claim" ? { claimed: value, changes } : changes };
}

/**
 * Runs the operations of one turn inside `tx`. Returns each operation's
 * outcome, in order; the caller settles them after the commit. Throws only
 * for what fails the whole transaction (the database), which the caller
 * retries or reports to every operation.
 */
export async function runTurn(tx: TurnTransaction, ops: readonly TurnOperation[]): Promise<Outcome[]> {
  await lockAll(tx, ops);
  const turn = new WorkingSet(tx.rows);
  const requeued = new Set<string>();
  const outcomes: Outcome[] = [];
  for (const op of ops) {
    let result: { changes: Changes; value: unknown };
    try {
      result = apply(turn, op);
    } catch (error) {
      outcomes.push({ ok: false, error });
      continue;
    }
    const { changes } = result;
    for (const { before, after } of changes.rollouts) {
      if (rolloutEffects(before, after).enqueue) requeued.add(after.rolloutId);
      turn.setRollout(after);
    }
    for (const { after } of changes.attempts) turn.setAttempt(after);
    for (const { after } of changes.workers) turn.setWorker(after);
    outcomes.push({ ok: true, value: result.value });
  }
  await tx.persist(turn.changes(), requeued);
  return outcomes;
}

/** Hands each caller its outcome. */
export function settle(ops: readonly TurnOperation[], outcomes: readonly Outcome[]) {
  ops.forEach((op, i) => {
    const outcome = outcomes[i]!;
    if (outcome.ok) (op.done.resolve as (value: unknown) => void)(outcome.value);
    else op.done.reject(outcome.error);
  });
}

/**
 * Gathers the operations asked for in one event-loop turn and runs them as
 * one turn (setImmediate: after the poll phase that delivered the requests).
 * At most `maxInFlight` turns are on the database at once; while they are,
 * the next gathers: under load, turns grow instead of transactions queueing
 * up. Two turns in flight overlap one's round trips with the other's; they
 * never wait on each other in a cycle (the lock order), and one that needs
 * rows the other holds waits for its commit.
 */
export class TurnQueue {
  private waiting: TurnOperation[] = [];
  private scheduled = false;
  private inFlight = 0;

  constructor(
    private readonly execute: (ops: TurnOperation[]) => Promise<void>,
    private readonly maxInFlight = 2,
  ) {}

  submit(op: TurnOperation) {
    this.waiting.push(op);
    this.schedule();
  }

  private schedule() {
    if (this.scheduled || this.inFlight >= this.maxInFlight || this.waiting.length === 0) return;
    this.scheduled = true;
    setImmediate(() => this.start());
  }

  private start() {
    this.scheduled = false;
    if (this.inFlight >= this.maxInFlight || this.waiting.length === 0) return;
    const ops = this.waiting;
    this.waiting = [];
    this.inFlight++;
    this.execute(ops)
      // execute settles its operations; should it fail instead, each caller hears why (nothing is left hanging).
      .catch((error: unknown) => {
        for (const op of ops) op.done.reject(error);
      })
      .finally(() => {
        this.inFlight--;
        this.schedule();
      });
  }
}
