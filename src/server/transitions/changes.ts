import type { Attempt } from "../../gen/runnerline/v1/attempt_pb.js";
import type { Rollout } from "../../gen/runnerline/v1/rollout_pb.js";
import type { WorkerRecord } from "../domain/worker.js";

/** One row an operation wrote: as it was when the operation read it (undefined when new) and as it left it. */
export interface Change<T> {
  readonly before: T | undefined;
  after: T;
}

/** Everything one store operation wrote, each row once. */
export interface Changes {
  readonly rollouts: readonly Change<Rollout>[];
  readonly attempts: readonly Change<Attempt>[];
  readonly workers: readonly Change<WorkerRecord>[];
}

export const NO_CHANGES: Changes = { rollouts: [], attempts: [], workers: [] };

/** Rows by id, as a store holds them when an operation starts (synchronous: the rows are at hand). */
export interface RowReader {
  rollout(rolloutId: string): Rollout | undefined;
  attempt(attemptId: string): Attempt | undefined;
  worker(workerId: string): WorkerRecord | undefined;
}

/**
 * The rows of one operation: reads see the operation's own writes, and
 * `changes()` lists each row written once, with its state before the
 * operation and its last state. Rows set back to what they were are left out.
 * An operation touches a handful of rows, so plain arrays searched from the
 * end are cheaper than maps here (this runs for every transition).
 */
export class WorkingSet implements RowReader {
  private readonly rollouts: Change<Rollout>[] = [];
  private readonly attempts: Change<Attempt>[] = [];
  private readonly workers: Change<WorkerRecord>[] = [];

  constructor(private readonly rows: RowReader) {}

  rollout(rolloutId: string): Rollout | undefined {
    return find(this.rollouts, (r) => r.rolloutId === rolloutId)?.after ?? this.rows.rollout(rolloutId);
  }

  attempt(attemptId: string): Attempt | undefined {
    return find(this.attempts, (a) => a.attemptId === attemptId)?.after ?? this.rows.attempt(attemptId);
  }

  worker(workerId: string): WorkerRecord | undefined {
    return find(this.workers, (w) => w.worker.workerId === workerId)?.after ?? this.rows.worker(workerId);
  }

  setRollout(after: Rollout) {
    const id = after.rolloutId;
    record(this.rollouts, (r) => r.rolloutId === id, after, () => this.rows.rollout(id));
  }

  setAttempt(after: Attempt) {
    const id = after.attemptId;
    record(this.attempts, (a) => a.attemptId === id, after, () => this.rows.attempt(id));
  }

  setWorker(after: WorkerRecord) {
    const id = after.worker.workerId;
    record(this.workers, (w) => w.worker.workerId === id, after, () => this.rows.worker(id));
  }

  changes(): Changes {
    return { rollouts: changed(this.rollouts), attempts: changed(this.attempts), workers: changed(this.workers) };
  }
}

function find<T>(changes: Change<T>[], isIt: (row: T) => boolean): Change<T> | undefined {
  for (let i = changes.length - 1; i >= 0; i--) if (isIt(changes[i]!.after)) return changes[i];
  return undefined;
}

function record<T>(changes: Change<T>[], isIt: (row: T) => boolean, after: T, before: () => T | undefined) {
  const change = find(changes, isIt);
  if (change !== undefined) change.after = after;
  else changes.push({ before: before(), after });
}

function changed<T>(changes: Change<T>[]): Change<T>[] {
  for (const change of changes) if (change.before === change.after) return changes.filter((c) => c.before !== c.after);
  return changes;
}
