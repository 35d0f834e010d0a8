import { toBinary } from "@bufbuild/protobuf";
import type pg from "pg";
import { type Attempt, AttemptSchema } from "../../../gen/runnerline/v1/attempt_pb.js";
import { type Rollout, RolloutSchema } from "../../../gen/runnerline/v1/rollout_pb.js";
import { isRolloutQueued, rolloutEffects } from "../../domain/rollout.js";
import type { WorkerRecord } from "../../domain/worker.js";
import type { Changes, RowReader } from "../../transitions/changes.js";
import { encodeRolloutState } from "../rollout-codec.js";
import { WORKER_ROW_COLUMNS, workerRow } from "../worker-row.js";
import { attemptOf, ms, rolloutOf, run, WORKER_READ, workerOf } from "./rows.js";
import type { TurnTransaction } from "./turn.js";

/** The rows one operation has locked, and how it writes its changes. */
export class Transaction implements TurnTransaction {
  private readonly rollouts = new Map<string, Rollout | undefined>();
  private readonly attempts = new Map<string, Attempt | undefined>();
  private readonly workers = new Map<string, WorkerRecord | undefined>();
  /**
   * What the step may read: only rows the operation locked
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
   * Locks these rollouts and those of these attempts in one statement, by id
   * (an attempt's rollout never changes, so finding it needs no lock).
   */
  async lockRolloutsAndThoseOfAttempts(rolloutIds: readonly string[], attemptIds: readonly string[]): Promise<Rollout[]> {
    const { rows } = await run(
      this.client,
      "SELECT rollout_id, message, state FROM rollouts WHERE rollout_id = ANY($1) OR rollout_id IN " +
        "(SELECT rollout_id FROM attempts WHERE attempt_id = ANY($2)) ORDER BY rollout_id FOR UPDATE",
      [rolloutIds.filter((id) => !this.rollouts.has(id)), attemptIds],
    );
    for (const row of rows) if (!this.rollouts.has(row.rollout_id as string)) this.rollouts.set(row.rollout_id as string, rolloutOf(row));
    for (const id of rolloutIds) if (!this.rollouts.has(id)) this.rollouts.set(id, undefined);
    return rows.map((row) => this.rollouts.get(row.rollout_id as string)).filter((r): r is Rollout => r !== undefined);
  }

  /** Locks rollouts; "queued" takes only queued ones and skips rows another transaction holds. */
  async lockRollouts(ids: readonly string[], only?: "queued"): Promise<Rollout[]> {
    const wanted = ids.filter((id) => !this.rollouts.has(id));
    if (wanted.length === 0) return ids.map((id) => this.rollouts.get(id)).filter((r): r is Rollout => r !== undefined);
    const lock = only === "queued" ? "AND queue_seq IS NOT NULL ORDER BY rollout_id FOR UPDATE SKIP LOCKED" : "ORDER BY rollout_id FOR UPDATE";
    const { rows } = await run(this.client, `SELECT rollout_id, message, state FROM rollouts WHERE rollout_id = ANY($1) ${lock}`, [wanted]);
    for (const id of wanted) this.rollouts.set(id, undefined);
    for (const row of rows) this.rollouts.set(row.rollout_id as string, rolloutOf(row));
    return ids.map((id) => this.rollouts.get(id)).filter((r): r is Rollout => r !== undefined);
  }

  async lockAttempts(ids: readonly string[]): Promise<Attempt[]> {
    const wanted = ids.filter((id) => !this.attempts.has(id));
    if (wanted.length > 0) {
      const { rows } = await run(this.client, "SELECT attempt_id, message FROM attempts WHERE attempt_id = ANY($1) ORDER BY attempt_id FOR UPDATE", [
        wanted,
      ]);
      for (const id of wanted) this.attempts.set(id, undefined);
      for (const row of rows) this.attempts.set(row.attempt_id as string, attemptOf(row));
    }
    return ids.map((id) => this.attempts.get(id)).filter((a): a is Attempt => a !== undefined);
  }

  async lockWorkers(ids: readonly string[]): Promise<void> {
    const wanted = [...new Set(ids)].filter((id) => !this.workers.has(id));
    if (wanted.length === 0) return;
    const { rows } = await run(this.client, `SELECT ${WORKER_READ} FROM workers WHERE worker_id = ANY($1) ORDER BY worker_id FOR UPDATE`, [
      wanted,
    ]);
    for (const id of wanted) this.workers.set(id, undefined);
    for (const row of rows) {
      const stored = workerOf(row);
      const laid = this.overlay(stored);
      if (laid !== stored) this.seenPending.set(stored.worker.workerId, laid);
      this.workers.set(row.worker_id as string, laid);
    }
  }

  /**
   * Writes an operation's changes: inserts for new rows, in-place updates
   * otherwise, queue places with the rollouts; as few statements as possible
   * (one round trip per batch of rows: see Writes).
   */
  async persist(changes: Changes, requeued: ReadonlySet<string> = new Set()) {
    const writes = new Writes();
    for (const { before, after } of changes.rollouts) {
      const effects = rolloutEffects(before, after);
      // Back in the queue during the turn (failed and requeued, say), even if it was queued when the turn began:
      // it goes to the back, as it would have in a transaction of its own.
      if (!effects.enqueue && requeued.has(after.rolloutId) && isRolloutQueued(after.status)) effects.enqueue = true;
      if (before === undefined) {
        writes.add(
          "INSERT INTO rollouts (rollout_id, status, mode, attempt_count, create_time, start_time, end_time, version, priority, message, state, queue_seq) " +
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, CASE WHEN $11 THEN nextval('rollout_queue_seq') END)",
          [
            after.rolloutId,
            after.status,
            after.mode,
            after.attemptCount,
            ms(after.createTime),
            ms(after.startTime),
            ms(after.endTime),
            after.version,
            after.priority,
            toBinary(RolloutSchema, after),
            effects.enqueue,
          ],
        );
        continue;
      }
      const queue = effects.enqueue ? ", queue_seq = nextval('rollout_queue_seq')" : effects.dequeue ? ", queue_seq = NULL" : "";
      writes.add(
        `UPDATE rollouts SET status = $1, attempt_count = $2, start_time = $3, end_time = $4, version = $5, state = $6${queue} WHERE rollout_id = $7`,
        [after.status, after.attemptCount, ms(after.startTime), ms(after.endTime), after.version, encodeRolloutState(after), after.rolloutId],
      );
    }
    for (const { before, after } of changes.attempts) {
      const values = [
        after.attemptId,
        after.rolloutId,
        after.sequenceId,
        after.workerId,
        after.status,
        ms(after.createTime),
        ms(after.startTime),
        ms(after.endTime),
        ms(after.lastHeartbeatTime),
        after.version,
        toBinary(AttemptSchema, after),
      ];
      writes.add(
        before === undefined
          ? "INSERT INTO attempts (attempt_id, rollout_id, sequence_id, worker_id, status, create_time, start_time, end_time, last_heartbeat_time, version, message) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
          : "UPDATE attempts SET rollout_id = $2, sequence_id = $3, worker_id = $4, status = $5, create_time = $6, start_time = $7, end_time = $8, last_heartbeat_time = $9, version = $10, message = $11 WHERE attempt_id = $1",
        values,
      );
    }
    for (const { before, after } of changes.workers) {
      // A session opened here (its epoch moved): this server holds it now.
      const opened = before === undefined || before.epoch !== after.epoch;
      const columns = WORKER_ROW_COLUMNS.length;
      const set = WORKER_ROW_COLUMNS.slice(1).map((column, i) => `${column} = $${i + 2}`);
      writes.add(
        `INSERT INTO workers (${WORKER_ROW_COLUMNS.join(", ")}, replica_id, telemetry) ` +
          `VALUES (${WORKER_ROW_COLUMNS.map((_, i) => `$${i + 1}`).join(", ")}, $${columns + 1}, NULL) ` +
          `ON CONFLICT (worker_id) DO UPDATE SET ${set.join(", ")}, ` +
          `replica_id = CASE WHEN $${columns + 2} THEN $${columns + 1} ELSE workers.replica_id END, telemetry = NULL`,
        [...workerRow(after), this.replicaId, opened],
      );
      this.writtenWorkers.push(after);
    }
    await writes.run(this.client);
  }
}

/**
 * Row writes sent together: each is one data-modifying WITH clause of a
 * single statement (PostgreSQL runs every one of them, on distinct rows), so
 * an operation's writes cost one round trip instead of one per row.
 */
export class Writes {
  private readonly batches: { clauses: string[]; params: unknown[] }[] = [];

  add(sql: string, params: unknown[]) {
    let batch = this.batches.at(-1);
    // Well below PostgreSQL's 65,535 parameters per statement.
    if (batch === undefined || batch.params.length + params.length > 30_000) this.batches.push((batch = { clauses: [], params: [] }));
    const offset = batch.params.length;
    batch.clauses.push(sql.replace(/\$(\d+)/g, (_, n: string) => `$${Number(n) + offset}`));
    batch.params.push(...params);
  }

  async run(client: pg.PoolClient) {
    for (const { clauses, params } of this.batches) {
      const sql = clauses.length === 1 ? clauses[0]! : `WITH ${clauses.map((c, i) => `w${i} AS (${c})`).join(", ")} SELECT 1`;
      await run(client, sql, params);
    }
  }
}

function known<T>(rows: Map<string, T | undefined>, id: string, kind: string): T | undefined {
  if (!rows.has(id)) throw new Error(`postgres store: the operation read ${kind} ${id} without locking it`);
  return rows.get(id);
}
