import pg from "pg";
import type { Attempt } from "../../gen/runnerline/v1/attempt_pb.js";
import { type Rollout, RolloutStatus } from "../../gen/runnerline/v1/rollout_pb.js";
import { type Worker, WorkerStatus } from "../../gen/runnerline/v1/worker_pb.js";
import { DomainError } from "../domain/errors.js";
import type { Labels } from "../domain/labels.js";
import type { WorkerRecord } from "../domain/worker.js";
import { matchesPredicate } from "../filter/evaluate.js";
import { type Changes, NO_CHANGES } from "../transitions/changes.js";
import type { AttemptStep, ClaimRequest, Claimed, RolloutStep, SessionFence, TransitionContext, WorkerStep } from "../transitions/steps.js";
import { BatchedReads } from "./postgres/batched-reads.js";
import { alreadyExistsOr, ENQUEUE_ROLLOUTS_SQL, enqueuedChanges, enqueueRolloutsParams } from "./postgres/enqueue-rollouts.js";
import { isUnreachable, messageOf, RETRYABLE, unavailableOr } from "./postgres/errors.js";
import { attemptOf, type Row, rolloutOf, run, WORKER_READ, workerMessageOf, workerOf } from "./postgres/rows.js";
import { GrowthAnalyzer } from "./postgres/analyze-growth.js";
import { HeldTelemetry } from "./postgres/held-telemetry.js";
import { Transaction } from "./postgres/transaction.js";
import { Where } from "./postgres/where.js";
import { LOCK_TELEMETRY_SQL, WRITE_TELEMETRY_SQL, writeTelemetryParams } from "./postgres/write-telemetry.js";
import { migrate } from "./postgres-schema.js";
import { newAttempts, runTurn, settle, type TurnOperation, TurnQueue } from "./postgres/turn.js";
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
import { StoreOpenError } from "./sqlite-schema.js";
import { onlyTelemetryChanged } from "./worker-telemetry.js";
import type { Store } from "./store.js";

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

const FINISHED_ROLLOUT_STATUSES = [RolloutStatus.SUCCEEDED, RolloutStatus.FAILED, RolloutStatus.CANCELLED];

/**
 * The store for several Runnerline servers sharing one PostgreSQL database
 * (docs/scaleout.md). The transitions of one event-loop turn share one
 * transaction (a turn: postgres/turn.ts); every other operation is a
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
  /** The heartbeat path: workers as last seen, telemetry written behind (postgres/held-telemetry.ts). */
  private readonly held = new HeldTelemetry();
  private readonly turns = new TurnQueue((ops) => this.runTurn(ops));
  /** Statistics for the tables that grow, kept current while they are young (postgres/analyze-growth.ts). */
  private readonly analyzeRollouts = new GrowthAnalyzer(() => this.query("ANALYZE rollouts"));
  private readonly analyzeAttempts = new GrowthAnalyzer(() => this.query("ANALYZE attempts"));
  private readonly flushTimer: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();
  private readonly rolloutReads = new BatchedReads<Rollout>(
    (ids) => this.getRollouts(ids),
    (rollout) => rollout.rolloutId,
  );

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

  /** Reads made in the same turn (an enqueue's idempotency checks) share one statement (postgres/batched-reads.ts). */
  getRollout(rolloutId: string): Promise<Rollout | undefined> {
    return this.rolloutReads.load(rolloutId);
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

  async attemptsOfRollouts(rolloutIds: readonly string[]): Promise<Map<string, Attempt[]>> {
    const found = new Map<string, Attempt[]>();
    if (rolloutIds.length === 0) return found;
    const { rows } = await this.query(
      "SELECT rollout_id, message FROM attempts WHERE rollout_id = ANY($1::text[]) ORDER BY rollout_id, sequence_id",
      [[...new Set(rolloutIds)]],
    );
    for (const row of rows) {
      const attempt = attemptOf(row);
      const list = found.get(attempt.rolloutId);
      if (list === undefined) found.set(attempt.rolloutId, [attempt]);
      else list.push(attempt);
    }
    return found;
  }

  async getWorker(workerId: string): Promise<WorkerRecord | undefined> {
    const { rows } = await this.query(`SELECT ${WORKER_READ} FROM workers WHERE worker_id = $1`, [workerId]);
    return rows[0] === undefined ? undefined : this.held.remember(this.held.overlay(workerOf(rows[0])));
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

  /** One statement for the whole batch (postgres/enqueue-rollouts.ts): atomic without a transaction around it. */
  async enqueueRollouts(rollouts: Rollout[]): Promise<Changes> {
    if (rollouts.length === 0) return NO_CHANGES;
    await this.statement(ENQUEUE_ROLLOUTS_SQL, enqueueRolloutsParams(rollouts)).catch((error: unknown) => {
      throw alreadyExistsOr(error);
    });
    this.analyzeRollouts.wrote(rollouts.length);
    return enqueuedChanges(rollouts);
  }

  // The transitions go through turns (postgres/turn.ts): those asked for in one event-loop turn share one
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
    const known = this.held.known(workerId);
    if (known !== undefined && (fence === undefined || fence.epoch === known.epoch)) {
      const after = step(known);
      if (after === known) return NO_CHANGES;
      if (onlyTelemetryChanged(known, after)) {
        this.held.hold(after);
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
      const outcomes = await this.transaction((tx) => runTurn(tx, ops));
      this.analyzeAttempts.wrote(newAttempts(ops, outcomes));
      settle(ops, outcomes);
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

  /** Writes the telemetry held back (its workers locked first, by id), without waiting for the disk. */
  flushTelemetry(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      const records = this.held.take();
      if (records.length === 0) return;
      try {
        await this.transaction(async (tx) => {
          await tx.client.query("SET LOCAL synchronous_commit = off");
          // All of them first, in the order turns lock workers; then written in batches.
          await run(tx.client, LOCK_TELEMETRY_SQL, [records.map((r) => r.worker.workerId)]);
          for (let start = 0; start < records.length; start += FLUSH_ROWS) {
            await run(tx.client, WRITE_TELEMETRY_SQL, writeTelemetryParams(records.slice(start, start + FLUSH_ROWS)));
          }
        });
      } catch (error) {
        // Kept for the next try, unless newer telemetry came meanwhile.
        this.held.restore(records);
        throw error;
      }
    });
    return this.flushing;
  }

  // ---- internals ----------------------------------------------------------

  private async query(text: string, params: unknown[] = []): Promise<pg.QueryResult<Row>> {
    try {
      return await run(this.pool, text, params);
    } catch (error) {
      throw unavailableOr(error);
    }
  }

  /** Runs one statement on its own (atomic without BEGIN/COMMIT), again after a deadlock; timed as a commit. */
  private async statement(text: string, params: unknown[]): Promise<pg.QueryResult<Row>> {
    for (let attempt = 1; ; attempt++) {
      const started = performance.now();
      try {
        const result = await run(this.pool, text, params);
        this.options.onCommit?.((performance.now() - started) / 1000);
        return result;
      } catch (error) {
        const code = (error as { code?: string }).code;
        if (code !== undefined && RETRYABLE.has(code) && attempt < 5) continue;
        throw unavailableOr(error);
      }
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
        const tx = new Transaction(client, this.options.replicaId ?? null, (record) => this.held.overlay(record));
        const result = await body(tx);
        await client.query("COMMIT");
        for (const record of tx.written()) this.held.written(record, tx.pendingSeen(record.worker.workerId));
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
