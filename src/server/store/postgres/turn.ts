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
import type { TurnNames } from "./lock-turn.js";

/**
 * One turn on PostgreSQL: the transitions asked for in one event-loop turn
 * (reports, cancels, worker changes, claims for every session with credits)
 * run in ONE transaction with a fixed number of round trips, whatever their
 * number: BEGIN; lock every row the turn names, in one statement
 * (lock-turn.ts: rollouts, claims' with SKIP LOCKED, attempts, workers);
 * apply the pure steps in arrival order to one working set, each seeing the
 * ones before it; write every changed row, in one statement (write-turn.ts);
 * COMMIT. Each caller gets its own operation's changes, as
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

/** What a turn needs of a transaction: one locking read, the locked rows, and one write of all changes. */
export interface TurnTransaction {
  readonly rows: RowReader;
  /** Locks every row the turn names (postgres/lock-turn.ts), in one statement. */
  lock(names: TurnNames): Promise<void>;
  /** Writes the turn's changes; `requeued` rollouts went back to the queue during the turn (a new queue place). */
  persist(changes: Changes, requeued: ReadonlySet<string>): Promise<void>;
}

/** Results of a turn's operations, handed to their callers once the turn has committed. */
type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/** The rows the operations name, by table (the locking read adds the rows they lead to). */
function namesOf(ops: readonly TurnOperation[]): TurnNames {
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
      for (const id of op.request.rolloutIds) queuedIds.push(id);
      workerIds.push(op.request.workerId);
    }
  }
  return { rolloutIds, attemptIds, queuedIds, workerIds };
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
  await tx.lock(namesOf(ops));
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

/** How many attempts the turn's claims created. */
export function newAttempts(ops: readonly TurnOperation[], outcomes: readonly Outcome[]): number {
  let count = 0;
  ops.forEach((op, i) => {
    const outcome = outcomes[i]!;
    if (op.kind === "claim" && outcome.ok) count += (outcome.value as { claimed: Claimed[] }).claimed.length;
  });
  return count;
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
 * At most `maxInFlight` turns are on the database at once (one by default);
 * while they are, the next gathers: under load, turns grow instead of
 * transactions queueing up. With more than one in flight, turns overlap
 * their round trips; they never wait on each other in a cycle (the lock
 * order), and one that needs rows the other holds waits for its commit. One
 * at a time measured better (docs/benchmarks.md): turns are larger, so there
 * are fewer round trips and commits per rollout, and a turn never waits for
 * another's row locks (they all lock the few busy workers' rows).
 */
export class TurnQueue {
  private waiting: TurnOperation[] = [];
  private scheduled = false;
  private inFlight = 0;

  constructor(
    private readonly execute: (ops: TurnOperation[]) => Promise<void>,
    private readonly maxInFlight = 1,
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
