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
 */
export class WorkingSet implements RowReader {
  private readonly rollouts = new Map<string, Change<Rollout>>();
  private readonly attempts = new Map<string, Change<Attempt>>();
  private readonly workers = new Map<string, Change<WorkerRecord>>();

  constructor(private readonly rows: RowReader) {}

  rollout(rolloutId: string): Rollout | undefined {
    return this.rollouts.get(rolloutId)?.after ?? this.rows.rollout(rolloutId);
  }

  attempt(attemptId: string): Attempt | undefined {
    return this.attempts.get(attemptId)?.after ?? this.rows.attempt(attemptId);
  }

  worker(workerId: string): WorkerRecord | undefined {
    return this.workers.get(workerId)?.after ?? this.rows.worker(workerId);
  }

  setRollout(after: Rollout) {
    record(this.rollouts, after.rolloutId, after, () => this.rows.rollout(after.rolloutId));
  }

  setAttempt(after: Attempt) {
    record(this.attempts, after.attemptId, after, () => this.rows.attempt(after.attemptId));
  }

  setWorker(after: WorkerRecord) {
    record(this.workers, after.worker.workerId, after, () => this.rows.worker(after.worker.workerId));
  }

  changes(): Changes {
    return { rollouts: changed(this.rollouts), attempts: changed(this.attempts), workers: changed(this.workers) };
  }
}

function record<T>(changes: Map<string, Change<T>>, id: string, after: T, before: () => T | undefined) {
  const change = changes.get(id);
  if (change !== undefined) change.after = after;
  else changes.set(id, { before: before(), after });
}

function changed<T>(changes: Map<string, Change<T>>): Change<T>[] {
  const list: Change<T>[] = [];
  for (const change of changes.values()) if (change.before !== change.after) list.push(change);
  return list;
}

/** Both lists, in order (for operations that run several steps). */
export function mergeChanges(a: Changes, b: Changes): Changes {
  if (a === NO_CHANGES) return b;
  if (b === NO_CHANGES) return a;
  return {
    rollouts: [...a.rollouts, ...b.rollouts],
    attempts: [...a.attempts, ...b.attempts],
    workers: [...a.workers, ...b.workers],
  };
}
