/**
 * The locking read of a turn (postgres/turn.ts): every row the turn's
 * operations name, locked FOR UPDATE in one statement whatever their number.
 * The statement's text never changes (every list travels as one array
 * parameter), so each connection parses and plans it once.
 *
 * Rows are locked table by table in the order every turn uses — the named
 * rollouts and those of the named attempts (r), the claims' queued rollouts
 * (q, SKIP LOCKED: a row another server is claiming right now is not queued
 * for us), the named attempts and every attempt of the named rollouts (a),
 * then the named workers and the workers of those attempts (w) — and by id
 * within each table, so two turns never wait on each other in a cycle. Each
 * part is a MATERIALIZED CTE read once, in that order, by the UNION ALL.
 *
 * An attempt's rollout never changes, so finding it needs no lock; a named
 * rollout's attempts are a superset of the one its steps read (its latest).
 * Lists are passed through `= ANY(array)` rather than OR-ed subqueries, which
 * PostgreSQL can only answer by scanning the whole table.
 */
export const LOCK_TURN_SQL =
  "WITH r AS MATERIALIZED (SELECT rollout_id, message, state FROM rollouts " +
  "WHERE rollout_id = ANY(array_cat($1::text[], ARRAY(SELECT rollout_id FROM attempts WHERE attempt_id = ANY($2::text[])))) " +
  "ORDER BY rollout_id FOR UPDATE), " +
  "q AS MATERIALIZED (SELECT rollout_id, message, state FROM rollouts " +
  "WHERE rollout_id = ANY($3::text[]) AND queue_seq IS NOT NULL ORDER BY rollout_id FOR UPDATE SKIP LOCKED), " +
  "a AS MATERIALIZED (SELECT attempt_id, worker_id, message FROM attempts " +
  "WHERE attempt_id = ANY(array_cat($2::text[], ARRAY(SELECT attempt_id FROM attempts WHERE rollout_id = ANY($1::text[])))) " +
  "ORDER BY attempt_id FOR UPDATE), " +
  "w AS MATERIALIZED (SELECT worker_id, attachment, suspect, epoch, message, telemetry FROM workers " +
  "WHERE worker_id = ANY(array_cat($4::text[], ARRAY(SELECT worker_id FROM a))) ORDER BY worker_id FOR UPDATE) " +
  "SELECT 1 AS part, rollout_id AS id, message, state, NULL::text AS attachment, NULL::boolean AS suspect, NULL::integer AS epoch FROM r " +
  "UNION ALL SELECT 2, rollout_id, message, state, NULL, NULL, NULL FROM q " +
  "UNION ALL SELECT 3, attempt_id, message, NULL, NULL, NULL, NULL FROM a " +
  "UNION ALL SELECT 4, worker_id, message, telemetry, attachment, suspect, epoch FROM w";

/** Which part of LOCK_TURN_SQL a row comes from (its `part` column). */
export const LOCKED_PART = { rollout: 1, queued: 2, attempt: 3, worker: 4 } as const;

/** What a turn names, by table: the statement's four array parameters. */
export interface TurnNames {
  /** Rollouts its operations change from outside their attempts (cancel, expiry). */
  rolloutIds: readonly string[];
  /** Attempts its operations change (reports, signs of life). */
  attemptIds: readonly string[];
  /** Queued rollouts its claims would take. */
  queuedIds: readonly string[];
  /** Workers its operations change, fence or claim for. */
  workerIds: readonly string[];
}

export function lockTurnParams(names: TurnNames): unknown[] {
  return [names.rolloutIds, names.attemptIds, names.queuedIds, names.workerIds];
}
