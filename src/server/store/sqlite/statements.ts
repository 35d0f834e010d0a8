import type { Database, Statement } from "better-sqlite3";
import { AttemptStatus } from "../../../gen/runnerline/v1/attempt_pb.js";
import { RolloutStatus } from "../../../gen/runnerline/v1/rollout_pb.js";
import { isAttemptActive } from "../../domain/attempt.js";
import { ATTEMPT_ROW_COLUMNS } from "../attempt-row.js";
import { WORKER_ROW_COLUMNS } from "../worker-row.js";
import type { SqlValue } from "./rows.js";

/**
 * The fixed statements of the SQLite store (sqlite-store.ts), prepared once
 * when the file is opened: the turn's BEGIN / COMMIT, the checkpoint, and
 * every read and write by id. Lists, whose text varies with the filter and
 * order, are prepared as they come (SqliteTables.statement).
 */

/** The statuses `finishedBefore` takes, after its two cutoffs. */
export const FINISHED_ROLLOUT_STATUSES = [RolloutStatus.SUCCEEDED, RolloutStatus.FAILED, RolloutStatus.CANCELLED];

/** The statuses `activeAttempts` takes. */
export const ACTIVE_ATTEMPT_STATUSES = Object.values(AttemptStatus).filter(
  (s): s is AttemptStatus => typeof s === "number" && isAttemptActive(s),
);

/**
 * The statements prepareStatements returns, by name. Written out because
 * the dist/ declarations cannot name the type better-sqlite3 infers.
 */
export interface SqliteStatements {
  begin: Statement;
  commit: Statement;
  rollback: Statement;
  checkpoint: Statement;

  getRollout: Statement<[string]>;
  insertRollout: Statement<SqlValue[]>;
  updateRollout: Statement<SqlValue[]>;

  getAttempt: Statement<[string]>;
  putAttempt: Statement<SqlValue[]>;
  activeAttempts: Statement<SqlValue[]>;

  getWorker: Statement<[string]>;
  putWorker: Statement<SqlValue[]>;

  finishedBefore: Statement<SqlValue[]>;
  attemptIdsOf: Statement<[string]>;
  deleteAttemptsOf: Statement<SqlValue[]>;
  deleteRollout: Statement<SqlValue[]>;
  offlineSilent: Statement<SqlValue[]>;
  deleteWorker: Statement<SqlValue[]>;

  queueCount: Statement;
  enqueue: Statement<SqlValue[]>;
  unqueue: Statement<SqlValue[]>;
  queuedIds: Statement;
}

export function prepareStatements(db: Database): SqliteStatements {
  const upsert = (table: string, key: string, columns: string[]) =>
    db.prepare<SqlValue[]>(
      `INSERT INTO ${table} (${columns.join(", ")}) VALUES (${columns.map(() => "?").join(", ")}) ` +
        `ON CONFLICT (${key}) DO UPDATE SET ${columns
          .filter((c) => c !== key)
          .map((c) => `${c} = excluded.${c}`)
          .join(", ")}`,
    );
  return {
    begin: db.prepare("BEGIN IMMEDIATE"),
    commit: db.prepare("COMMIT"),
    rollback: db.prepare("ROLLBACK"),
    checkpoint: db.prepare("PRAGMA wal_checkpoint(PASSIVE)"),

    getRollout: db.prepare<[string]>("SELECT message, state FROM rollouts WHERE rollout_id = ?"),
    // An upsert, so that writing a rollout anew (tests, a replayed operation) replaces it whole.
    insertRollout: upsert("rollouts", "rollout_id", [
      "rollout_id",
      "status",
      "mode",
      "attempt_count",
      "create_time",
      "start_time",
      "end_time",
      "version",
      "message",
      "priority",
      "state",
    ]),
    updateRollout: db.prepare<SqlValue[]>(
      "UPDATE rollouts SET status = ?, attempt_count = ?, start_time = ?, end_time = ?, version = ?, state = ? WHERE rollout_id = ?",
    ),

    getAttempt: db.prepare<[string]>("SELECT message FROM attempts WHERE attempt_id = ?").pluck(),
    putAttempt: upsert("attempts", "attempt_id", [...ATTEMPT_ROW_COLUMNS]),
    activeAttempts: db.prepare<SqlValue[]>(
      `SELECT attempt_id, message FROM attempts WHERE status IN (${ACTIVE_ATTEMPT_STATUSES.map(() => "?").join(", ")}) ORDER BY rowid`,
    ),

    getWorker: db.prepare<[string]>("SELECT worker_id, attachment, suspect, epoch, message FROM workers WHERE worker_id = ?"),
    putWorker: upsert("workers", "worker_id", [...WORKER_ROW_COLUMNS]),

    finishedBefore: db.prepare<SqlValue[]>(
      `SELECT message, state FROM rollouts WHERE create_time < ? AND end_time < ? AND status IN (${FINISHED_ROLLOUT_STATUSES.map(() => "?").join(", ")}) ` +
        "ORDER BY create_time LIMIT ?",
    ),
    attemptIdsOf: db.prepare<[string]>("SELECT attempt_id FROM attempts WHERE rollout_id = ?").pluck(),
    deleteAttemptsOf: db.prepare<SqlValue[]>("DELETE FROM attempts WHERE rollout_id = ?"),
    deleteRollout: db.prepare<SqlValue[]>("DELETE FROM rollouts WHERE rollout_id = ?"),
    // lastHeardOf in memory-store.ts, in SQL.
    offlineSilent: db.prepare<SqlValue[]>(
      "SELECT worker_id, attachment, suspect, epoch, message FROM workers WHERE status = ? " +
        "AND COALESCE(last_heartbeat_time, connect_time, create_time, 0) < ? ORDER BY rowid LIMIT ?",
    ),
    deleteWorker: db.prepare<SqlValue[]>("DELETE FROM workers WHERE worker_id = ?"),

    queueCount: db.prepare("SELECT count(*) FROM queue").pluck(),
    enqueue: db.prepare<SqlValue[]>("INSERT INTO queue (rollout_id) VALUES (?)"),
    unqueue: db.prepare<SqlValue[]>("DELETE FROM queue WHERE rollout_id = ?"),
    queuedIds: db.prepare("SELECT rollout_id FROM queue ORDER BY seq").pluck(),
  };
}
