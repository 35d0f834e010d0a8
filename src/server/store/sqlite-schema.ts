import { mkdirSync, statSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { DEFAULT_SYNCHRONOUS } from "./sqlite-synchronous.js";

/**
 * The SQLite file format of Runnerline: its tables, the forward migrations
 * between versions, and the checks made before a file is trusted.
 *
 * Each entity is kept as its protobuf binary encoding (`message`, the source
 * of truth) plus the columns that list queries filter and sort on. The sort
 * columns carry the names of the fields in the sort catalogs of query.ts, so
 * an order_by field is a column name; times are integer milliseconds, NULL
 * when unset.
 */

/** PRAGMA application_id of every Runnerline database: "RNLN". */
export const APPLICATION_ID = 0x524e4c4e;

/** Migration i takes a database from user_version i to i + 1. Never edit a shipped one: append. */
export const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE rollouts (
    rollout_id    TEXT PRIMARY KEY,
    status        INTEGER NOT NULL,
    mode          INTEGER NOT NULL,
    attempt_count INTEGER NOT NULL,
    create_time   INTEGER,
    start_time    INTEGER,
    end_time      INTEGER,
    version       INTEGER NOT NULL,
    message       BLOB NOT NULL
  );
  CREATE INDEX rollouts_by_create_time ON rollouts (create_time, rollout_id);
  CREATE INDEX rollouts_by_status ON rollouts (status, create_time, rollout_id);

  CREATE TABLE attempts (
    attempt_id          TEXT PRIMARY KEY,
    rollout_id          TEXT NOT NULL,
    sequence_id         INTEGER NOT NULL,
    worker_id           TEXT NOT NULL,
    status              INTEGER NOT NULL,
    create_time         INTEGER,
    start_time          INTEGER,
    end_time            INTEGER,
    last_heartbeat_time INTEGER,
    version             INTEGER NOT NULL,
    message             BLOB NOT NULL
  );
  CREATE INDEX attempts_by_create_time ON attempts (create_time, attempt_id);
  CREATE INDEX attempts_by_status ON attempts (status, create_time, attempt_id);
  CREATE INDEX attempts_by_rollout ON attempts (rollout_id, sequence_id);
  CREATE INDEX attempts_by_worker ON attempts (worker_id, create_time);

  CREATE TABLE workers (
    worker_id           TEXT PRIMARY KEY,
    status              INTEGER NOT NULL,
    capacity            INTEGER NOT NULL,
    last_heartbeat_time INTEGER,
    last_dequeue_time   INTEGER,
    last_busy_time      INTEGER,
    last_idle_time      INTEGER,
    connect_time        INTEGER,
    create_time         INTEGER,
    labels              TEXT NOT NULL,   -- JSON object, for label filters
    attachment          TEXT NOT NULL,   -- WorkerRecord.attachment
    suspect             INTEGER NOT NULL, -- WorkerRecord.suspect (0/1)
    version             INTEGER NOT NULL,
    message             BLOB NOT NULL
  );
  CREATE INDEX workers_by_status ON workers (status, worker_id);

  -- The dispatch queue: head = smallest seq. A push takes max(seq) + 1 (the rowid rule), so
  -- re-pushing a rollout moves it behind every entry there is, across restarts too.
  CREATE TABLE queue (
    seq        INTEGER PRIMARY KEY,
    rollout_id TEXT NOT NULL UNIQUE
  );
  `,
  // 2: rollouts get a dispatch priority (RolloutService order_by "priority"); rows written before it have 0.
  `
  ALTER TABLE rollouts ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
  `,
  // 3: the store seam. Workers carry their session epoch (the fence of writes made for a session). A rollout's
  // message is written once at enqueue; its transitions rewrite only the status columns and \`state\` (the mutable
  // fields, encoded as a Rollout), which overrides those fields of \`message\` when set. Rows written before keep
  // state NULL and their whole message.
  `
  ALTER TABLE workers ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE rollouts ADD COLUMN state BLOB;
  `,
  // 4: an operator's cordon (WorkerService.CordonWorker) as a column, so \`cordoned = true\` filters in SQL. The message
  // stays the truth; rows written before were never cordoned.
  `
  ALTER TABLE workers ADD COLUMN cordoned INTEGER NOT NULL DEFAULT 0;
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/** The file cannot be used as a Runnerline store; the message says why and what to do. */
export class StoreOpenError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StoreOpenError";
  }
}

export type Synchronous = "full" | "normal";

export interface OpenOptions {
  synchronous?: Synchronous;
  /** For tests of the migration machinery; defaults to MIGRATIONS. */
  migrations?: readonly string[];
  /**
   * Create the file's folder when it is missing (the default ./data). Off, a
   * missing folder is refused: an explicit path with a typo must not leave a
   * fresh, empty database somewhere nobody looks.
   */
  createFolder?: boolean;
}

/**
 * Opens (creating it if missing, and its folder with `createFolder`) a Runnerline database, checks
 * that it is one this binary understands, and runs the forward migrations.
 * Throws StoreOpenError, never leaving a half-opened connection behind.
 */
export function openDatabase(path: string, options: OpenOptions = {}): Database.Database {
  const migrations = options.migrations ?? MIGRATIONS;
  if (path !== ":memory:") prepareFolder(path, options.createFolder === true);
  let db: Database.Database | undefined;
  try {
    // A short busy timeout: the only other holder of the lock is another server on the same file.
    db = new Database(path, { timeout: 1_000 });
    // One server per file: the exclusive lock is taken at the first write and
    // held until close (a killed process releases it with its file handles).
    db.pragma("locking_mode = EXCLUSIVE");
    const applicationId = db.pragma("application_id", { simple: true }) as number;
    const version = db.pragma("user_version", { simple: true }) as number;
    const tables = db
      .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
      .pluck()
      .all() as string[];
    const fresh = applicationId === 0 && version === 0 && tables.length === 0;
    if (!fresh && applicationId !== APPLICATION_ID) {
      const what =
        applicationId === 0
          ? `it has tables ${tables.join(", ") || "(none)"} and user_version ${version}`
          : `application_id 0x${(applicationId >>> 0).toString(16)}`;
      throw new StoreOpenError(`${path} is a SQLite database but not a Runnerline one (${what}); point --store at another file`);
    }
    if (version > migrations.length) {
      throw new StoreOpenError(
        `${path} has schema version ${version}, newer than this runnerline understands (${migrations.length}); ` +
          `run a newer runnerline, or point --store at another file`,
      );
    }
    const check = db.pragma("quick_check", { simple: true });
    if (check !== "ok") throw new StoreOpenError(`${path} is corrupt (quick_check: ${String(check)})`);
    const mode = db.pragma("journal_mode = WAL", { simple: true });
    if (mode !== "wal") throw new StoreOpenError(`${path}: could not switch to WAL mode (journal_mode is ${String(mode)})`);
    db.pragma(`synchronous = ${options.synchronous ?? DEFAULT_SYNCHRONOUS}`);
    // Measured with bench/dispatch-stores.ts: with SQLite's defaults (2 MB of page cache, a checkpoint every
    // 1,000 WAL pages inside some COMMIT) dispatch spent most of its time in COMMIT. The store checkpoints on a
    // timer instead (SqliteStoreOptions.checkpointMs); the automatic one stays as a bound on the WAL's size.
    db.pragma("cache_size = -65536");
    db.pragma("wal_autocheckpoint = 16384");
    const migrate = db.transaction(() => {
      for (let v = version; v < migrations.length; v++) db!.exec(migrations[v]!);
      db!.pragma(`application_id = ${APPLICATION_ID}`);
      db!.pragma(`user_version = ${migrations.length}`);
    });
    // Taking the write lock now (even when there is nothing to migrate) makes a second server fail here, at open.
    migrate.immediate();
    return db;
  } catch (error) {
    db?.close();
    throw explainOpenError(path, error);
  }
}

function explainOpenError(path: string, error: unknown): Error {
  if (error instanceof StoreOpenError) return error;
  const code = (error as { code?: unknown }).code;
  const message = error instanceof Error ? error.message : String(error);
  switch (code) {
    case "SQLITE_NOTADB":
      return new StoreOpenError(`${path} is not a SQLite database (or its header is corrupt): ${message}`, { cause: error });
    case "SQLITE_CORRUPT":
      return new StoreOpenError(`${path} is corrupt: ${message}`, { cause: error });
    case "SQLITE_BUSY":
    case "SQLITE_LOCKED":
      return new StoreOpenError(`${path} is in use by another process (is another runnerline server running on it?)`, {
        cause: error,
      });
    case "SQLITE_CANTOPEN":
    case "SQLITE_READONLY":
    case "SQLITE_PERM":
      return new StoreOpenError(`cannot open ${path} for writing: ${message}`, { cause: error });
    default:
      return new StoreOpenError(`cannot open the store ${path}: ${message}`, { cause: error });
  }
}

/** Creates the database's folder (createFolder) or checks that it is there: SQLite's own error names neither. */
function prepareFolder(path: string, createFolder: boolean): void {
  const folder = dirname(path);
  if (createFolder) {
    mkdirSync(folder, { recursive: true });
    return;
  }
  const kind = folderKind(folder);
  if (kind === "folder") return;
  const what = kind === "missing" ? "does not exist" : "is not a folder";
  throw new StoreOpenError(
    `cannot open ${path}: ${folder} ${what}; create the folder first, or point --store (RUNNERLINE_STORE) at a file in an existing one`,
  );
}

function folderKind(folder: string): "folder" | "missing" | "other" {
  try {
    return statSync(folder).isDirectory() ? "folder" : "other";
  } catch {
    return "missing";
  }
}
