import type pg from "pg";
import type { Attempt } from "../../../gen/runnerline/v1/attempt_pb.js";
import type { Rollout } from "../../../gen/runnerline/v1/rollout_pb.js";
import type { WorkerRecord } from "../../domain/worker.js";
import type { Changes, RowReader } from "../../transitions/changes.js";
import { LOCK_TURN_SQL, LOCKED_PART, lockTurnParams, type TurnNames } from "./lock-turn.js";
import { attemptOf, rolloutOf, run, workerOf } from "./rows.js";
import type { TurnTransaction } from "./turn.js";
import { WRITE_TURN_SQL, writeTurnParams } from "./write-turn.js";

/** The rows one transaction has locked, and how it writes its changes. */
export class Transaction implements TurnTransaction {
  private readonly rollouts = new Map<string, Rollout | undefined>();
  private readonly attempts = new Map<string, Attempt | undefined>();
  private readonly workers = new Map<string, WorkerRecord | undefined>();
  /**
   * What the step may read: only rows the transaction locked
   * (reading another is a bug, so it throws). Attempts are the exception: a
   * claim makes new attempt ids, which no one else can hold yet (the insert
   * refuses a duplicate).
   */
  readonly rows: RowReader = {
    rollout: (id) => known(this.rollouts, id, "rollout"),
    attempt: (id) => this.attempts.get(id),
    worker: (id) => known(this.workers, id, "worker"),
  };

  private readonly writtenWorkers: WorkerRecord[] = [];
  private readonly seenPending = new Map<string, WorkerRecord | undefined>();

  constructor(
    readonly client: pg.PoolClient,
    private readonly replicaId: string | null,
    /** Lays the store's held-back telemetry over a worker read here, so the step starts from the newest. */
    private readonly overlay: (record: WorkerRecord) => WorkerRecord,
  ) {}

  /** The workers this transaction wrote (their last state). */
  written(): readonly WorkerRecord[] {
    return this.writtenWorkers;
  }

  /** The held-back telemetry record that was laid over this worker when it was locked, if any. */
  pendingSeen(workerId: string): WorkerRecord | undefined {
    return this.seenPending.get(workerId);
  }

  /**
   * Locks every row `names` calls for in one statement (postgres/lock-turn.ts);
   * a named row that does not exist (or, for a claim, is no longer queued) reads as undefined.
   */
  async lock(names: TurnNames): Promise<void> {
    const { rows } = await run(this.client, LOCK_TURN_SQL, lockTurnParams(names));
    for (const row of rows) {
      const id = row.id as string;
      switch (row.part as number) {
        case LOCKED_PART.rollout:
        case LOCKED_PART.queued:
          // A claim's rollout that the turn also names is locked twice; both reads are the same row.
          if (this.rollouts.get(id) === undefined) this.rollouts.set(id, rolloutOf(row));
          break;
        case LOCKED_PART.attempt:
          this.attempts.set(id, attemptOf(row));
          break;
        case LOCKED_PART.worker: {
          const stored = workerOf({ ...row, telemetry: row.state });
          const laid = this.overlay(stored);
          if (laid !== stored) this.seenPending.set(id, laid);
          this.workers.set(id, laid);
          break;
        }
      }
    }
    for (const id of names.rolloutIds) if (!this.rollouts.has(id)) this.rollouts.set(id, undefined);
    for (const id of names.queuedIds) if (!this.rollouts.has(id)) this.rollouts.set(id, undefined);
    for (const id of names.attemptIds) if (!this.attempts.has(id)) this.attempts.set(id, undefined);
    for (const id of names.workerIds) if (!this.workers.has(id)) this.workers.set(id, undefined);
    for (const attempt of this.attempts.values()) {
      if (attempt !== undefined && attempt.workerId !== "" && !this.workers.has(attempt.workerId)) this.workers.set(attempt.workerId, undefined);
    }
  }

  /**
   * Writes a turn's changes in one statement (postgres/write-turn.ts);
   * `requeued` rollouts went back to the queue during the turn.
   */
  async persist(changes: Changes, requeued: ReadonlySet<string> = new Set()) {
    await run(this.client, WRITE_TURN_SQL, writeTurnParams(changes, requeued, this.replicaId));
    for (const { after } of changes.workers) this.writtenWorkers.push(after);
  }
}

function known<T>(rows: Map<string, T | undefined>, id: string, kind: string): T | undefined {
  if (!rows.has(id)) throw new Error(`postgres store: the operation read ${kind} ${id} without locking it`);
  return rows.get(id);
}
