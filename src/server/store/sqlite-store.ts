import { toBinary } from "@bufbuild/protobuf";
import type { Database, Statement } from "better-sqlite3";
import { type Attempt, AttemptSchema } from "../../gen/runnerline/v1/attempt_pb.js";
import { type Rollout, RolloutSchema } from "../../gen/runnerline/v1/rollout_pb.js";
import { type Worker, WorkerSchema, WorkerStatus } from "../../gen/runnerline/v1/worker_pb.js";
import { msOf } from "../domain/time.js";
import type { WorkerRecord } from "../domain/worker.js";
import {
  ATTEMPT_SORT_FIELDS,
  type AttemptFilter,
  type ListQuery,
  type Page,
  ROLLOUT_SORT_FIELDS,
  type RolloutFilter,
  pageOf,
  type SortCatalog,
  WORKER_SORT_FIELDS,
  type WorkerFilter,
} from "./query.js";
import { sqlOrderBy } from "./sql-order.js";
import { matchesPredicate } from "../filter/evaluate.js";
import type { Predicate } from "../filter/compile.js";
import { ATTEMPT_COLUMNS, ROLLOUT_COLUMNS, WORKER_COLUMNS } from "./filter-sql.js";
import { decodeRollout, encodeRolloutState } from "./rollout-codec.js";
import { workerRow } from "./worker-row.js";
import { attemptRow } from "./attempt-row.js";
import { type OpenOptions, openDatabase } from "./sqlite-schema.js";
import { EmbeddedStore } from "./embedded-store.js";
import type { Tables } from "./tables.js";
import { decodeRecord } from "./decode-record.js";
import { ReadCache } from "./sqlite/read-cache.js";
import { columnsOf, type Decoded, ms, type SqlValue, type WorkerRow, workerRecordOf } from "./sqlite/rows.js";
import { ACTIVE_ATTEMPT_STATUSES, FINISHED_ROLLOUT_STATUSES, prepareStatements, type SqliteStatements } from "./sqlite/statements.js";
import { contains, equal, expression, inList } from "./sqlite/where.js";

export interface SqliteStoreOptions extends OpenOptions {
  /**
   * How long heartbeat telemetry may wait in memory before it is written
   * (default 500 ms): the most of it a crash can lose.
   */
  telemetryFlushMs?: number;
  /**
   * How often the write-ahead log is checkpointed into the database file when
   * something was committed since (default 1,000 ms). With synchronous=NORMAL
   * a checkpoint is when the log reaches the disk, so this bounds in time
   * what a power loss can take, as Redis's appendfsync everysec does.
   */
  checkpointMs?: number;
  /** Decoded entities kept per kind for the coordinator's repeated reads (default 10,000; 0 turns it off). */
  cacheSize?: number;
  /** Told how long each group COMMIT took, in seconds (for runnerline_store_commit_seconds). */
  onCommit?: (seconds: number) => void;
}

/**
 * The embedded, durable store (DESIGN §7): one SQLite file in WAL mode.
 *
 * Group commit: the first write of an event-loop turn opens a transaction and
 * schedules its COMMIT with setImmediate, so every write of that turn — all
 * the RPCs that arrived together — costs one commit (one fsync with
 * synchronous=FULL). `commit()` resolves after that COMMIT.
 *
 * Written behind: what a restart rebuilds or can do without is kept in
 * memory, served to reads at once, and written at most `telemetryFlushMs`
 * later (lists and scans write it first):
 * - an attempt put whose version did not change (a sign of life);
 * - a worker put that leaves its facts alone (workerFactsChanged): heartbeat
 *   telemetry, time stamps, and its BUSY / IDLE status with the attempts it
 *   holds, which recovery rebuilds from the attempts themselves
 *   (Coordinator.recover). Sessions, epochs and quarantine are written at once.
 */
export class SqliteStore extends EmbeddedStore {
  /** Opens (creating if missing) the database at `path`; throws StoreOpenError with the reason when it cannot. */
  static open(path: string, options: SqliteStoreOptions = {}): SqliteStore {
    return new SqliteStore(SqliteTables.open(path, options));
  }

  private constructor(tables: SqliteTables) {
    super(tables);
  }
}

/** The rows of a SqliteStore: tables in one SQLite file, behind a write-through cache. */
export class SqliteTables implements Tables {
  private readonly sql: SqliteStatements;
  private readonly listStatements = new Map<string, Statement<SqlValue[]>>();
  private turnOpen = false;
  private waiters: { resolve: () => void; reject: (error: unknown) => void }[] = [];
  private failure: unknown;
  private closed = false;
  private queueCount: number;
  private readonly pendingWorkers = new Map<string, WorkerRecord>();
  private readonly pendingAttempts = new Map<string, Attempt>();
  private telemetryTimer: NodeJS.Timeout | undefined;
  private readonly checkpointTimer: NodeJS.Timeout;
  /** Something was committed since the last checkpoint. */
  private uncheckpointed = false;
  private readonly telemetryFlushMs: number;
  private readonly onCommit: ((seconds: number) => void) | undefined;
  // Write-through caches of decoded messages: the coordinator reads the same
  // few entities many times per transition, and decoding costs more than the
  // SQL. Entities are never mutated in place (the domain copies), so sharing
  // them is as safe as the memory store's maps.
  private readonly rollouts: ReadCache<Rollout>;
  private readonly attempts: ReadCache<Attempt>;
  private readonly workers: ReadCache<WorkerRecord>;

  /** Opens (creating if missing) the database at `path`; throws StoreOpenError with the reason when it cannot. */
  static open(path: string, options: SqliteStoreOptions = {}): SqliteTables {
    return new SqliteTables(openDatabase(path, options), options);
  }

  private constructor(
    private readonly db: Database,
    options: SqliteStoreOptions,
  ) {
    this.sql = prepareStatements(db);
    this.queueCount = this.sql.queueCount.get() as number;
    this.telemetryFlushMs = options.telemetryFlushMs ?? 500;
    this.checkpointTimer = setInterval(() => this.checkpoint(), options.checkpointMs ?? 1_000);
    this.checkpointTimer.unref();
    this.onCommit = options.onCommit;
    const cacheSize = options.cacheSize ?? 10_000;
    this.rollouts = new ReadCache(cacheSize);
    this.attempts = new ReadCache(cacheSize);
    this.workers = new ReadCache(cacheSize);
  }

  // ---- rollouts ----------------------------------------------------------

  getRollout(rolloutId: string): Rollout | undefined {
    const cached = this.rollouts.get(rolloutId);
    if (cached !== undefined) return cached;
    const row = this.sql.getRollout.get(rolloutId) as Decoded | undefined;
    return row === undefined ? undefined : this.rollouts.set(rolloutId, decodeRollout(row.message, row.state));
  }

  /**
   * A new rollout is written whole (its message, with state NULL: one encoding); a transition rewrites only its
   * status columns and its state, which overrides the message's mutable fields (rollout-codec.ts).
   */
  putRollout(rollout: Rollout, before?: Rollout) {
    this.rollouts.set(rollout.rolloutId, rollout);
    if (before === undefined) {
      this.write(this.sql.insertRollout, [
        rollout.rolloutId,
        rollout.status,
        rollout.mode,
        rollout.attemptCount,
        ms(rollout.createTime),
        ms(rollout.startTime),
        ms(rollout.endTime),
        rollout.version,
        toBinary(RolloutSchema, rollout),
        rollout.priority,
        null,
      ]);
      return;
    }
    this.write(this.sql.updateRollout, [
      rollout.status,
      rollout.attemptCount,
      ms(rollout.startTime),
      ms(rollout.endTime),
      rollout.version,
      encodeRolloutState(rollout),
      rollout.rolloutId,
    ]);
  }

  listRollouts(query: ListQuery<RolloutFilter>): Page<Rollout> {
    const where: string[] = [];
    const params: SqlValue[] = [];
    inList(where, params, "status", query.filter.statuses);
    contains(where, params, "rollout_id", query.filter.idContains);
    if (query.filter.onlyIds !== undefined) {
      where.push("rollout_id IN (SELECT value FROM json_each(?))");
      params.push(JSON.stringify([...query.filter.onlyIds]));
    }
    const rest = expression(where, params, query.filter.expression, ROLLOUT_COLUMNS);
    return this.page("rollouts", ROLLOUT_SORT_FIELDS, where, params, query, rest, (row) => decodeRollout(row.message, row.state));
  }

  // ---- attempts ----------------------------------------------------------

  getAttempt(attemptId: string): Attempt | undefined {
    const cached = this.pendingAttempts.get(attemptId) ?? this.attempts.get(attemptId);
    if (cached !== undefined) return cached;
    const bytes = this.sql.getAttempt.get(attemptId) as Uint8Array | undefined;
    return bytes === undefined ? undefined : this.attempts.set(attemptId, decodeRecord(AttemptSchema, bytes));
  }

  /** Inserted once, then updated in place; a change that leaves `version` alone is a sign of life, written behind. */
  putAttempt(attempt: Attempt, before?: Attempt) {
    this.attempts.set(attempt.attemptId, attempt);
    if (before !== undefined && before.version === attempt.version) {
      // Same version: a sign of life (last_heartbeat_time) only.
      this.pendingAttempts.set(attempt.attemptId, attempt);
      this.scheduleTelemetry();
      return;
    }
    this.pendingAttempts.delete(attempt.attemptId);
    this.writeAttempt(attempt);
  }

  listAttempts(query: ListQuery<AttemptFilter>): Page<Attempt> {
    this.flushTelemetry();
    const where: string[] = [];
    const params: SqlValue[] = [];
    equal(where, params, "rollout_id", query.filter.rolloutId);
    equal(where, params, "worker_id", query.filter.workerId);
    inList(where, params, "status", query.filter.statuses);
    const rest = expression(where, params, query.filter.expression, ATTEMPT_COLUMNS);
    return this.page("attempts", ATTEMPT_SORT_FIELDS, where, params, query, rest, (row) =>
      decodeRecord(AttemptSchema, row.message),
    );
  }

  activeAttempts(): Attempt[] {
    const rows = this.sql.activeAttempts.all(...ACTIVE_ATTEMPT_STATUSES) as { attempt_id: string; message: Uint8Array }[];
    return rows.map((row) => this.pendingAttempts.get(row.attempt_id) ?? decodeRecord(AttemptSchema, row.message));
  }

  // ---- workers -----------------------------------------------------------

  getWorker(workerId: string): WorkerRecord | undefined {
    const cached = this.pendingWorkers.get(workerId) ?? this.workers.get(workerId);
    if (cached !== undefined) return cached;
    const row = this.sql.getWorker.get(workerId) as WorkerRow | undefined;
    return row === undefined ? undefined : this.workers.set(workerId, workerRecordOf(row));
  }

  putWorker(record: WorkerRecord, before?: WorkerRecord) {
    const { worker } = record;
    this.workers.set(worker.workerId, record);
    // A change of facts is always written at once, so `before` (what the operation read) has the stored facts.
    if (before !== undefined && !workerFactsChanged(before, record)) {
      this.pendingWorkers.set(worker.workerId, record);
      this.scheduleTelemetry();
      return;
    }
    this.pendingWorkers.delete(worker.workerId);
    this.writeWorker(record);
  }

  listWorkers(query: ListQuery<WorkerFilter>): Page<Worker> {
    this.flushTelemetry();
    const where: string[] = [];
    const params: SqlValue[] = [];
    inList(where, params, "status", query.filter.statuses);
    contains(where, params, "worker_id", query.filter.idContains);
    for (const [key, value] of Object.entries(query.filter.labels)) {
      where.push("EXISTS (SELECT 1 FROM json_each(workers.labels) WHERE key = ? AND value = ?)");
      params.push(key, value);
    }
    const rest = expression(where, params, query.filter.expression, WORKER_COLUMNS);
    return this.page("workers", WORKER_SORT_FIELDS, where, params, query, rest, (row) =>
      decodeRecord(WorkerSchema, row.message),
    );
  }

  workersWithStatus(statuses: WorkerStatus[]): WorkerRecord[] {
    if (statuses.length === 0) return [];
    this.flushTelemetry();
    const where: string[] = [];
    const params: SqlValue[] = [];
    inList(where, params, "status", statuses);
    const statement = this.statement(
      `SELECT worker_id, attachment, suspect, epoch, message FROM workers WHERE ${where.join(" AND ")} ORDER BY rowid`,
    );
    const rows = statement.all(...params) as WorkerRow[];
    return rows.map((row) => this.pendingWorkers.get(row.worker_id) ?? workerRecordOf(row));
  }

  // ---- dispatch queue ----------------------------------------------------

  pushQueue(rolloutId: string) {
    const removed = this.write(this.sql.unqueue, [rolloutId]);
    this.write(this.sql.enqueue, [rolloutId]);
    this.queueCount += 1 - removed;
  }

  removeFromQueue(rolloutId: string) {
    this.queueCount -= this.write(this.sql.unqueue, [rolloutId]);
  }

  queuedRolloutIds(): string[] {
    return this.sql.queuedIds.all() as string[];
  }

  queueLength() {
    return this.queueCount;
  }

  // ---- retention ---------------------------------------------------------

  finishedRolloutsBefore(cutoff: number, limit: number): Rollout[] {
    // end_time >= create_time, so the create_time index narrows the search to old rollouts.
    const rows = this.sql.finishedBefore.all(cutoff, cutoff, ...FINISHED_ROLLOUT_STATUSES, limit) as Decoded[];
    return rows.map((row) => decodeRollout(row.message, row.state));
  }

  deleteRollout(rolloutId: string) {
    const attemptIds = this.sql.attemptIdsOf.all(rolloutId) as string[];
    for (const attemptId of attemptIds) {
      this.attempts.delete(attemptId);
      this.pendingAttempts.delete(attemptId);
    }
    this.rollouts.delete(rolloutId);
    this.write(this.sql.deleteAttemptsOf, [rolloutId]);
    this.write(this.sql.deleteRollout, [rolloutId]);
    this.queueCount -= this.write(this.sql.unqueue, [rolloutId]);
  }

  offlineWorkersSilentSince(cutoff: number, limit: number): WorkerRecord[] {
    this.flushTelemetry();
    const rows = this.sql.offlineSilent.all(WorkerStatus.OFFLINE, cutoff, limit) as WorkerRow[];
    return rows.map((row) => this.pendingWorkers.get(row.worker_id) ?? workerRecordOf(row));
  }

  deleteWorker(workerId: string) {
    this.workers.delete(workerId);
    this.pendingWorkers.delete(workerId);
    this.write(this.sql.deleteWorker, [workerId]);
  }

  // ---- durability --------------------------------------------------------

  commit(): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (!this.turnOpen) return Promise.resolve();
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Writes the telemetry held back, commits, and closes the file. */
  async close() {
    if (this.closed) return;
    clearTimeout(this.telemetryTimer);
    clearInterval(this.checkpointTimer);
    if (this.failure === undefined) {
      this.flushTelemetry();
      if (this.turnOpen) this.commitTurn();
    }
    this.closed = true;
    this.db.close();
  }

  // ---- internals ---------------------------------------------------------

  /** Runs a write inside this turn's transaction; returns the number of rows changed. */
  private write(statement: Statement<SqlValue[]>, params: SqlValue[]): number {
    this.beginTurn();
    return statement.run(...params).changes;
  }

  private beginTurn() {
    if (this.closed) throw new Error("the store is closed");
    if (this.failure !== undefined) {
      throw new Error(`the store failed to commit and refuses further writes; restart the server: ${String(this.failure)}`);
    }
    if (this.turnOpen) return;
    this.sql.begin.run();
    this.turnOpen = true;
    setImmediate(() => this.commitTurn());
  }

  private commitTurn() {
    if (!this.turnOpen) return;
    this.turnOpen = false;
    const waiters = this.waiters;
    this.waiters = [];
    const started = performance.now();
    try {
      this.sql.commit.run();
    } catch (error) {
      // What this turn wrote is gone, so the caches (queue count, telemetry) no longer match the file.
      this.failure = error;
      if (this.db.inTransaction) this.sql.rollback.run();
      this.rollouts.clear();
      this.attempts.clear();
      this.workers.clear();
      for (const waiter of waiters) waiter.reject(error);
      return;
    }
    this.onCommit?.((performance.now() - started) / 1000);
    this.uncheckpointed = true;
    for (const waiter of waiters) waiter.resolve();
  }

  /** Copies the log into the database file (fsyncing both), between turns, when there is something to copy. */
  private checkpoint() {
    if (!this.uncheckpointed || this.turnOpen || this.closed || this.failure !== undefined) return;
    this.uncheckpointed = false;
    this.sql.checkpoint.run();
  }

  private scheduleTelemetry() {
    if (this.telemetryTimer !== undefined) return;
    this.telemetryTimer = setTimeout(() => {
      this.telemetryTimer = undefined;
      if (!this.closed && this.failure === undefined) this.flushTelemetry();
    }, this.telemetryFlushMs);
    this.telemetryTimer.unref();
  }

  /** Writes held-back telemetry into this turn's transaction. */
  private flushTelemetry() {
    for (const record of this.pendingWorkers.values()) this.writeWorker(record);
    for (const attempt of this.pendingAttempts.values()) this.writeAttempt(attempt);
    this.pendingWorkers.clear();
    this.pendingAttempts.clear();
  }

  private writeAttempt(attempt: Attempt) {
    this.write(this.sql.putAttempt, attemptRow(attempt));
  }

  private writeWorker(record: WorkerRecord) {
    // SQLite has no booleans: suspect is 0 or 1.
    this.write(this.sql.putWorker, workerRow(record).map((value) => (typeof value === "boolean" ? (value ? 1 : 0) : value)));
  }

  /**
   * One page in SQL, ordered exactly as pageOf orders it in memory: unset
   * times last ascending and first descending; other fields are never unset;
   * insertion order breaks the remaining ties, as a stable sort would.
   *
   * A filter with terms SQL cannot express (`rest`) is narrowed by SQL as far
   * as it goes, then finished, sorted and paged in process like the memory
   * store does.
   */
  private page<T extends object>(
    table: string,
    catalog: SortCatalog<unknown>,
    where: string[],
    params: SqlValue[],
    query: ListQuery<unknown>,
    rest: Predicate | undefined,
    decode: (row: Decoded) => T,
  ): Page<T> {
    if (rest !== undefined) {
      const filter = where.length === 0 ? "" : ` WHERE ${where.join(" AND ")}`;
      const rows = this.statement(`SELECT ${columnsOf(table)} FROM ${table}${filter} ORDER BY rowid`).all(...params) as Decoded[];
      return pageOf(rows.map(decode), (item) => matchesPredicate(rest, item), catalog as SortCatalog<T>, query);
    }
    const order = sqlOrderBy(catalog, query.orderBy, "rowid");
    const filter = where.length === 0 ? "" : ` WHERE ${where.join(" AND ")}`;
    const total = this.statement(`SELECT count(*) FROM ${table}${filter}`).pluck().get(...params) as number;
    if (query.limit <= 0 || query.offset >= total) return { items: [], total };
    const rows = this.statement(
      `SELECT ${columnsOf(table)} FROM ${table}${filter} ORDER BY ${order} LIMIT ? OFFSET ?`,
    ).all(...params, query.limit, query.offset) as Decoded[];
    return { items: rows.map(decode), total };
  }

  /** List statements vary with the filter and order; each distinct text is prepared once. */
  private statement(text: string): Statement<SqlValue[]> {
    let statement = this.listStatements.get(text);
    if (statement === undefined) {
      statement = this.db.prepare<SqlValue[]>(text);
      this.listStatements.set(text, statement);
    }
    return statement;
  }
}

/**
 * Whether a worker change touches what must be durable at once: its session
 * (attachment, epoch, and with it labels and capacity), suspicion,
 * quarantine and an operator's cordon. Everything else a restart rebuilds (held attempts, status) or
 * can lose (telemetry, time stamps), so it is written behind.
 */
function workerFactsChanged(before: WorkerRecord, after: WorkerRecord): boolean {
  const b = before.worker;
  const a = after.worker;
  return (
    before.attachment !== after.attachment ||
    before.suspect !== after.suspect ||
    before.epoch !== after.epoch ||
    b.cordoned !== a.cordoned ||
    b.draining !== a.draining ||
    b.cordonReason !== a.cordonReason ||
    b.quarantineCount !== a.quarantineCount ||
    b.quarantineReason !== a.quarantineReason ||
    msOf(b.quarantineUntil) !== msOf(a.quarantineUntil)
  );
}
