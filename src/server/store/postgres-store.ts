import { toBinary } from "@bufbuild/protobuf";
import pg from "pg";
import { type Attempt, AttemptSchema } from "../../gen/runnerline/v1/attempt_pb.js";
import { type Rollout, RolloutSchema, RolloutStatus } from "../../gen/runnerline/v1/rollout_pb.js";
import { type Worker, WorkerSchema, WorkerStatus } from "../../gen/runnerline/v1/worker_pb.js";
import { DomainError } from "../domain/errors.js";
import type { Labels } from "../domain/labels.js";
import { isRolloutQueued, rolloutEffects } from "../domain/rollout.js";
import { msOf } from "../domain/time.js";
import type { Attachment, WorkerRecord } from "../domain/worker.js";
import { matchesPredicate } from "../filter/evaluate.js";
import { type Changes, NO_CHANGES, type RowReader, WorkingSet } from "../transitions/changes.js";
import type { AttemptStep, ClaimRequest, Claimed, RolloutStep, SessionFence, TransitionContext, WorkerStep } from "../transitions/steps.js";
import { migrate } from "./postgres-schema.js";
import { runTurn, settle, type TurnOperation, TurnQueue, type TurnTransaction } from "./postgres-turn.js";
import {
  ATTEMPT_SORT_FIELDS,
  type AttemptFilter,
  type ListQuery,
  matchesAttempt,
  matchesRollout,
  matchesWorker,
  type Page,
  pageOf,
  ROLLOUT_SORT_FIELDS,
  type RolloutFilter,
  type SortCatalog,
  WORKER_SORT_FIELDS,
  type WorkerFilter,
} from "./query.js";
import { sqlOrderBy } from "./sql-order.js";
import { decodeRollout, encodeRolloutState } from "./rollout-codec.js";
import { WORKER_ROW_COLUMNS, workerRow } from "./worker-row.js";
import { StoreOpenError } from "./sqlite-schema.js";
import { encodeTelemetry, onlyTelemetryChanged, withTelemetry } from "./worker-telemetry.js";
import type { Store } from "./store.js";
import { decodeRecord } from "./decode-record.js";

export interface PostgresStoreOptions {
  /** Connections in the pool (default 8). */
  poolSize?: number;
  /** How long an idle pooled connection is kept open (default 10 s). */
  idleMs?: number;
  /** A schema to use instead of the connection's default (tests give each store its own). */
  schema?: string;
  /** Told how long each operation's transaction took, in seconds (runnerline_store_commit_seconds). */
  onCommit?: (seconds: number) => void;
  /** This server among the replicas: recorded on the workers whose sessions it opens (src/server/replicas). */
  replicaId?: string;
  /** How long worker telemetry may wait in memory before it is written, in one batch (default 500 ms). */
  telemetryFlushMs?: number;
}

/** Workers whose telemetry one UPDATE writes (a flush of more sends several, in the same transaction). */
const FLUSH_ROWS = 500;
/** Worker records kept for the heartbeat path; beyond this many the oldest are forgotten (they are re-read). */
const RECENT_WORKERS = 50_000;

const FINISHED_ROLLOUT_STATUSES = [RolloutStatus.SUCCEEDED, RolloutStatus.FAILED, RolloutStatus.CANCELLED];
/** SQLSTATEs after which an operation is simply run again: serialization failure, deadlock. */
const RETRYABLE = new Set(["40001", "40P01"]);
/** SQLSTATE classes that mean the database cannot be reached now (connection exceptions, shutdown). */
const UNREACHABLE_CLASSES = ["08", "57P"];

type Row = Record<string, unknown>;

/**
 * The store for several Runnerline servers sharing one PostgreSQL database
 * (docs/scaleout.md). The transitions of one event-loop turn share one
 * transaction (a turn: postgres-turn.ts); every other operation is a
 * transaction of its own. Either locks the rows it
 * names (rollouts, then attempts, then workers, so two operations never wait
 * on each other in opposite orders), runs the operation's step from
 * src/server/transitions on them, writes what changed and commits before it
 * resolves; `commit()` therefore has nothing left to wait for. A session's
 * writes are fenced by its epoch, read under the same lock.
 *
 * While the database cannot be reached, operations fail with UNAVAILABLE;
 * the pool reconnects by itself when it is back, and nothing committed is lost.
 */
export class PostgresStore implements Store {
  /** The last state of each worker this server wrote or read: the heartbeat path's starting point. */
  private readonly recent = new Map<string, WorkerRecord>();
  /** Telemetry not yet written, per worker (the newest record; only its telemetry is written). */
  private pending = new Map<string, WorkerRecord>();
  private readonly turns = new TurnQueue((ops) => this.runTurn(ops));
  private readonly flushTimer: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly pool: pg.Pool,
    private readonly options: PostgresStoreOptions,
  ) {
    this.flushTimer = setInterval(() => {
      this.flushTelemetry().catch(() => undefined);
    }, options.telemetryFlushMs ?? 500);
    this.flushTimer.unref();
  }

  /** Connects, creates or migrates the schema, and refuses a newer one or a database that is not Runnerline's. */
  static async open(url: string, options: PostgresStoreOptions = {}): Promise<PostgresStore> {
    const where = describe(url, options.schema);
    const pool = new pg.Pool({
      connectionString: url,
      max: options.poolSize ?? 8,
      idleTimeoutMillis: options.idleMs ?? 10_000,
      connectionTimeoutMillis: 5_000,
      // A transaction left open by a stuck client must not pin the vacuum horizon (docs/scaleout.md).
      idle_in_transaction_session_timeout: 10_000,
      ...(options.schema !== undefined && { options: `-c search_path=${options.schema}` }),
    });
    // A client that loses its connection (the database restarted) is dropped from the pool, not fatal: idle
    // ones report it to the pool, checked-out ones to themselves, and the query in flight fails (UNAVAILABLE).
    pool.on("error", () => {});
    pool.on("connect", (client) => client.on("error", () => {}));
    let client: pg.PoolClient | undefined;
    try {
      client = await pool.connect();
      await migrate(client, where, options.schema === undefined ? undefined : quoteIdent(options.schema));
    } catch (error) {
      client?.release();
      await pool.end().catch(() => undefined);
      if (error instanceof StoreOpenError) throw error;
      throw new StoreOpenError(`cannot open the store ${where}: ${messageOf(error)}`, { cause: error });
    }
    client.release();
    return new PostgresStore(pool, options);
  }

  // ---- reads ----------------------------------------------------------------

  async getRollout(rolloutId: string): Promise<Rollout | undefined> {
    const { rows } = await this.query("SELECT message, state FROM rollouts WHERE rollout_id = $1", [rolloutId]);
    return rows[0] === undefined ? undefined : rolloutOf(rows[0]);
  }

  async getRollouts(rolloutIds: readonly string[]): Promise<Rollout[]> {
    if (rolloutIds.length === 0) return [];
    const { rows } = await this.query("SELECT message, state FROM rollouts WHERE rollout_id = ANY($1)", [rolloutIds]);
    return rows.map(rolloutOf);
  }

  async listRollouts(query: ListQuery<RolloutFilter>): Promise<Page<Rollout>> {
    const where = new Where();
    where.in("status", query.filter.statuses);
    where.contains("rollout_id", query.filter.idContains);
    if (query.filter.onlyIds !== undefined) where.add("rollout_id = ANY($)", [...query.filter.onlyIds]);
    return this.page("rollouts", "message, state", ROLLOUT_SORT_FIELDS, where, query, rolloutOf, (r) =>
      matchesRollout(query.filter, r),
    );
  }

  async getAttempt(attemptId: string): Promise<Attempt | undefined> {
    const { rows } = await this.query("SELECT message FROM attempts WHERE attempt_id = $1", [attemptId]);
    return rows[0] === undefined ? undefined : attemptOf(rows[0]);
  }

  async listAttempts(query: ListQuery<AttemptFilter>): Promise<Page<Attempt>> {
    const where = new Where();
    where.equal("rollout_id", query.filter.rolloutId);
    where.equal("worker_id", query.filter.workerId);
    where.in("status", query.filter.statuses);
    return this.page("attempts", "message", ATTEMPT_SORT_FIELDS, where, query, attemptOf, (a) => matchesAttempt(query.filter, a));
  }

  async getWorker(workerId: string): Promise<WorkerRecord | undefined> {
    const { rows } = await this.query(`SELECT ${WORKER_READ} FROM workers WHERE worker_id = $1`, [workerId]);
    return rows[0] === undefined ? undefined : this.remember(this.overlay(workerOf(rows[0])));
  }

  async listWorkers(query: ListQuery<WorkerFilter>): Promise<Page<Worker>> {
    await this.flushTelemetry();
    const where = new Where();
    where.in("status", query.filter.statuses);
    where.contains("worker_id", query.filter.idContains);
    if (Object.keys(query.filter.labels).length > 0) where.add("labels @> $::jsonb", JSON.stringify(query.filter.labels));
    return this.page("workers", "message, telemetry", WORKER_SORT_FIELDS, where, query, (row) => workerMessageOf(row), (w) =>
      matchesWorker(query.filter, w),
    );
  }

  async workersWithStatus(statuses: WorkerStatus[]): Promise<WorkerRecord[]> {
    if (statuses.length === 0) return [];
    await this.flushTelemetry();
    const { rows } = await this.query(`SELECT ${WORKER_READ} FROM workers WHERE status = ANY($1) ORDER BY ord`, [statuses]);
    return rows.map(workerOf);
  }

  /** Read from the columns alone: no message is decoded (the replicas' resync asks every 2 s). */
  async attachedWorkerLabels(): Promise<Map<string, Labels>> {
    const { rows } = await this.query("SELECT worker_id, labels FROM workers WHERE attachment = 'open'");
    return new Map(rows.map((row) => [row.worker_id as string, row.labels as Labels]));
  }

  async activeAttempts(): Promise<Attempt[]> {
    const { rows } = await this.query("SELECT message FROM attempts WHERE status IN (1, 2) ORDER BY create_time, attempt_id");
    return rows.map(attemptOf);
  }

  async queuedRollouts(): Promise<Rollout[]> {
    const { rows } = await this.query("SELECT message, state FROM rollouts WHERE queue_seq IS NOT NULL ORDER BY queue_seq");
    return rows.map(rolloutOf);
  }

  async queuedRolloutIds(): Promise<string[]> {
    const { rows } = await this.query("SELECT rollout_id FROM rollouts WHERE queue_seq IS NOT NULL ORDER BY queue_seq");
    return rows.map((row) => row.rollout_id as string);
  }

  async queueLength(): Promise<number> {
    const { rows } = await this.query("SELECT count(*)::integer AS n FROM rollouts WHERE queue_seq IS NOT NULL");
    return rows[0]!.n as number;
  }

  async finishedRolloutsBefore(cutoff: number, limit: number): Promise<Rollout[]> {
    const { rows } = await this.query(
      "SELECT message, state FROM rollouts WHERE create_time < $1 AND end_time < $1 AND status = ANY($2) ORDER BY create_time LIMIT $3",
      [cutoff, FINISHED_ROLLOUT_STATUSES, limit],
    );
    return rows.map(rolloutOf);
  }

  async offlineWorkersSilentSince(cutoff: number, limit: number): Promise<WorkerRecord[]> {
    await this.flushTelemetry();
    const { rows } = await this.query(
      `SELECT ${WORKER_READ} FROM workers WHERE status = $1 AND COALESCE(last_heartbeat_time, connect_time, create_time, 0) < $2 ORDER BY ord LIMIT $3`,
      [WorkerStatus.OFFLINE, cutoff, limit],
    );
    return rows.map(workerOf);
  }

  // ---- atomic operations ----------------------------------------------------

  async enqueueRollouts(rollouts: Rollout[]): Promise<Changes> {
    return this.transaction(async (tx) => {
      tx.declareNewRollouts(rollouts.map((rollout) => rollout.rolloutId));
      const rows = new WorkingSet(tx.rows);
      for (const rollout of rollouts) rows.setRollout(rollout);
      try {
        await tx.persist(rows.changes());
      } catch (error) {
        if ((error as { code?: string }).code === "23505") {
          throw new DomainError("already_exists", `rollout ${(error as { detail?: string }).detail ?? ""} exists`);
        }
        throw error;
      }
      return rows.changes();
    });
  }

  // The transitions go through turns (postgres-turn.ts): those asked for in one event-loop turn share one
  // transaction of a fixed number of round trips.

  claimRollouts(request: ClaimRequest): Promise<{ claimed: Claimed[]; changes: Changes }> {
    return new Promise((resolve, reject) => this.turns.submit({ kind: "claim", request, done: { resolve, reject } }));
  }

  changeAttempt(attemptId: string, fence: SessionFence | undefined, step: AttemptStep, context: TransitionContext): Promise<Changes> {
    return new Promise((resolve, reject) => this.turns.submit({ kind: "attempt", attemptId, fence, step, context, done: { resolve, reject } }));
  }

  changeRollout(rolloutId: string, step: RolloutStep, context: TransitionContext): Promise<Changes> {
    return new Promise((resolve, reject) => this.turns.submit({ kind: "rollout", rolloutId, step, context, done: { resolve, reject } }));
  }

  async changeWorker(workerId: string, fence: SessionFence | undefined, step: WorkerStep): Promise<Changes> {
    // The heartbeat path: a change of telemetry only (heartbeats, work requests) starts from the worker as this
    // server last saw it and is written behind, in a batch; only the telemetry columns are written then, so a
    // stale view of the rest changes nothing in the database. Anything else is a transition on the locked row.
    const known = this.recent.get(workerId);
    if (known !== undefined && (fence === undefined || fence.epoch === known.epoch)) {
      const after = step(known);
      if (after === known) return NO_CHANGES;
      if (onlyTelemetryChanged(known, after)) {
        this.pending.set(workerId, after);
        this.remember(after);
        return { rollouts: [], attempts: [], workers: [{ before: known, after }] };
      }
    }
    return new Promise((resolve, reject) => this.turns.submit({ kind: "worker", workerId, fence, step, done: { resolve, reject } }));
  }

  /**
   * Runs one turn's operations in one transaction. Should the transaction fail
   * for anything but an unreachable database, each operation runs again alone,
   * so that one operation's failure is never another's.
   */
  private async runTurn(ops: TurnOperation[]): Promise<void> {
    try {
      settle(ops, await this.transaction((tx) => runTurn(tx, ops)));
    } catch (error) {
      if (ops.length === 1 || (error instanceof DomainError && error.kind === "unavailable")) {
        for (const op of ops) op.done.reject(error);
        return;
      }
      for (const op of ops) await this.runTurn([op]);
    }
  }

  async moveToBackOfQueue(rolloutId: string): Promise<void> {
    await this.query("UPDATE rollouts SET queue_seq = nextval('rollout_queue_seq') WHERE rollout_id = $1 AND queue_seq IS NOT NULL", [
      rolloutId,
    ]);
  }

  async deleteRollout(rolloutId: string): Promise<void> {
    await this.transaction(async (tx) => {
      await run(tx.client, "DELETE FROM attempts WHERE rollout_id = $1", [rolloutId]);
      await run(tx.client, "DELETE FROM rollouts WHERE rollout_id = $1", [rolloutId]);
    });
  }

  async deleteWorker(workerId: string): Promise<void> {
    await this.query("DELETE FROM workers WHERE worker_id = $1", [workerId]);
  }

  /** Every operation commits before it resolves (worker telemetry is written behind: docs/scaleout.md). */
  async commit(): Promise<void> {}

  async close(): Promise<void> {
    clearInterval(this.flushTimer);
    await this.flushTelemetry().catch(() => undefined);
    await this.pool.end();
  }

  /** Writes the telemetry held back, all of it in one statement, without waiting for the disk. */
  flushTelemetry(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      if (this.pending.size === 0) return;
      const batch = this.pending;
      this.pending = new Map();
      const records = [...batch.values()];
      try {
        await this.transaction(async (tx) => {
          await tx.client.query("SET LOCAL synchronous_commit = off");
          // Telemetry travels as base64 text: pg writes a bytea[] parameter as escaped hex, several times the CPU.
          for (let start = 0; start < records.length; start += FLUSH_ROWS) {
            const chunk = records.slice(start, start + FLUSH_ROWS);
            await run(
              tx.client,
              "UPDATE workers AS w SET telemetry = decode(t.telemetry, 'base64'), last_heartbeat_time = t.heartbeat, last_dequeue_time = t.dequeue " +
                "FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS t(worker_id, telemetry, heartbeat, dequeue) " +
                "WHERE w.worker_id = t.worker_id",
              [
                chunk.map((r) => r.worker.workerId),
                chunk.map((r) => Buffer.from(encodeTelemetry(r.worker)).toString("base64")),
                chunk.map((r) => ms(r.worker.lastHeartbeatTime)),
                chunk.map((r) => ms(r.worker.lastDequeueTime)),
              ],
            );
          }
        });
      } catch (error) {
        // Kept for the next try, unless newer telemetry came meanwhile.
        for (const record of records) if (!this.pending.has(record.worker.workerId)) this.pending.set(record.worker.workerId, record);
        throw error;
      }
    });
    return this.flushing;
  }

  /** A worker read from the database, with the telemetry this server holds back laid over it. */
  private overlay(record: WorkerRecord): WorkerRecord {
    const pending = this.pending.get(record.worker.workerId);
    if (pending === undefined) return record;
    return { ...record, worker: withTelemetry(record.worker, encodeTelemetry(pending.worker)) };
  }

  private remember(record: WorkerRecord): WorkerRecord {
    const id = record.worker.workerId;
    this.recent.delete(id);
    this.recent.set(id, record);
    if (this.recent.size > RECENT_WORKERS) this.recent.delete(this.recent.keys().next().value!);
    return record;
  }

  // ---- internals ----------------------------------------------------------

  private async query(text: string, params: unknown[] = []): Promise<pg.QueryResult<Row>> {
    try {
      return await run(this.pool, text, params);
    } catch (error) {
      throw unavailableOr(error);
    }
  }

  /** Runs `body` in one transaction (READ COMMITTED, rows locked as it reads them), again after a deadlock. */
  private async transaction<T>(body: (tx: Transaction) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      let client: pg.PoolClient;
      try {
        client = await this.pool.connect();
      } catch (error) {
        throw unavailableOr(error);
      }
      const started = performance.now();
      try {
        await client.query("BEGIN");
        const tx = new Transaction(client, this.options.replicaId ?? null, (record) => this.overlay(record));
        const result = await body(tx);
        await client.query("COMMIT");
        for (const record of tx.written()) {
          this.remember(record);
          // Its telemetry went with it (the locked read carried the pending telemetry).
          if (this.pending.get(record.worker.workerId) === tx.pendingSeen(record.worker.workerId)) this.pending.delete(record.worker.workerId);
        }
        this.options.onCommit?.((performance.now() - started) / 1000);
        client.release();
        return result;
      } catch (error) {
        await client.query("ROLLBACK").catch(() => undefined);
        const code = (error as { code?: string }).code;
        // A broken connection must not go back to the pool.
        client.release(isUnreachable(error) ? (error as Error) : undefined);
        if (code !== undefined && RETRYABLE.has(code) && attempt < 5) continue;
        throw unavailableOr(error);
      }
    }
  }

  /**
   * One page in SQL when the list has no filter expression, ordered exactly as
   * pageOf orders it in memory (unset times last ascending, first descending;
   * the id breaks ties); with an expression, SQL narrows by the other fields
   * and the expression, order and page are applied in process.
   */
  private async page<T extends object>(
    table: string,
    columns: string,
    catalog: SortCatalog<unknown>,
    where: Where,
    query: ListQuery<{ expression?: { predicate: Parameters<typeof matchesPredicate>[0] } }>,
    decode: (row: Row) => T,
    matches: (item: T) => boolean,
  ): Promise<Page<T>> {
    if (query.filter.expression !== undefined) {
      const { rows } = await this.query(`SELECT ${columns} FROM ${table}${where.sql()} ORDER BY ord`, where.params);
      return pageOf(rows.map(decode), matches, catalog as SortCatalog<T>, query);
    }
    const order = sqlOrderBy(catalog, query.orderBy, "ord");
    const total = Number((await this.query(`SELECT count(*) AS n FROM ${table}${where.sql()}`, where.params)).rows[0]!.n);
    if (query.limit <= 0 || query.offset >= total) return { items: [], total };
    const limit = Math.min(query.limit, total);
    const n = where.params.length;
    const { rows } = await this.query(
      `SELECT ${columns} FROM ${table}${where.sql()} ORDER BY ${order} LIMIT $${n + 1} OFFSET $${n + 2}`,
      [...where.params, limit, query.offset],
    );
    return { items: rows.map(decode), total };
  }
}

/** The rows one operation has locked, and how it writes its changes. */
class Transaction implements TurnTransaction {
  private readonly rollouts = new Map<string, Rollout | undefined>();
  private readonly attempts = new Map<string, Attempt | undefined>();
  private readonly workers = new Map<string, WorkerRecord | undefined>();
  /**
   * What the step may read: only rows the operation locked or declared new
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

  /** Rollouts the operation inserts: none exists yet (the insert refuses a duplicate). */
  declareNewRollouts(ids: readonly string[]) {
    for (const id of ids) this.rollouts.set(id, undefined);
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
class Writes {
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

/** Statement texts prepared by name: parsed and planned once per connection instead of on every call. */
const preparedNames = new Map<string, string>();
/** Texts beyond this many (the combined writes of unusual shapes) are sent unnamed, so no connection hoards plans. */
const MAX_PREPARED = 400;

/** Runs a statement, prepared by name when its text is one of the usual few. */
function run(client: pg.ClientBase | pg.Pool, text: string, values: unknown[] = []): Promise<pg.QueryResult<Row>> {
  let name = preparedNames.get(text);
  if (name === undefined && preparedNames.size < MAX_PREPARED && text.length < 8_000) {
    name = `rl${preparedNames.size}`;
    preparedNames.set(text, name);
  }
  return name === undefined ? client.query(text, values) : client.query({ name, text, values });
}

function known<T>(rows: Map<string, T | undefined>, id: string, kind: string): T | undefined {
  if (!rows.has(id)) throw new Error(`postgres store: the operation read ${kind} ${id} without locking it`);
  return rows.get(id);
}

/** A WHERE clause built from parts, with `$` placeholders numbered as they are added. */
class Where {
  private readonly parts: string[] = [];
  readonly params: unknown[] = [];

  add(condition: string, value: unknown) {
    this.params.push(value);
    this.parts.push(condition.replace("$", `$${this.params.length}`));
  }

  in(column: string, values: readonly number[]) {
    if (values.length > 0) this.add(`${column} = ANY($)`, values);
  }

  equal(column: string, value: string) {
    if (value !== "") this.add(`${column} = $`, value);
  }

  /** Case-sensitive substring, as String.prototype.includes. */
  contains(column: string, value: string) {
    if (value !== "") this.add(`strpos(${column}, $) > 0`, value);
  }

  sql() {
    return this.parts.length === 0 ? "" : ` WHERE ${this.parts.join(" AND ")}`;
  }
}

const WORKER_READ = "worker_id, attachment, suspect, epoch, message, telemetry";

function rolloutOf(row: Row): Rollout {
  return decodeRollout(row.message as Uint8Array, row.state as Uint8Array | null);
}

function attemptOf(row: Row): Attempt {
  return decodeRecord(AttemptSchema, row.message as Uint8Array);
}

function workerMessageOf(row: Row): Worker {
  return withTelemetry(decodeRecord(WorkerSchema, row.message as Uint8Array), row.telemetry as Uint8Array | null);
}

function workerOf(row: Row): WorkerRecord {
  return {
    worker: workerMessageOf(row),
    attachment: row.attachment as Attachment,
    suspect: row.suspect as boolean,
    epoch: row.epoch as number,
  };
}

const ms = (timestamp: Parameters<typeof msOf>[0]) => msOf(timestamp) ?? null;

function isUnreachable(error: unknown): boolean {
  const code = (error as { code?: string }).code ?? "";
  if (UNREACHABLE_CLASSES.some((prefix) => code.startsWith(prefix))) return true;
  if (["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND"].includes(code)) return true;
  const message = messageOf(error);
  return /Connection terminated|connection timeout|Client has encountered a connection error|not queryable/i.test(message);
}

/** A database that cannot be reached is UNAVAILABLE to the caller (retry later); anything else stays as it is. */
function unavailableOr(error: unknown): unknown {
  if (error instanceof DomainError) return error;
  if (isUnreachable(error)) return new DomainError("unavailable", `the database cannot be reached: ${messageOf(error)}`);
  return error;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** An identifier quoted for SQL. */
function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** The store's address without its password, for messages. */
function describe(url: string, schema: string | undefined): string {
  let shown = url;
  try {
    const parsed = new URL(url);
    if (parsed.password !== "") parsed.password = "***";
    shown = parsed.toString();
  } catch {
    // Not a URL (a libpq key-value string): shown as given.
  }
  return schema === undefined ? shown : `${shown} (schema ${schema})`;
}
