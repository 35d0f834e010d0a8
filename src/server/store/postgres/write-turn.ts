import type { Attempt } from "../../../gen/runnerline/v1/attempt_pb.js";
import type { Rollout } from "../../../gen/runnerline/v1/rollout_pb.js";
import { isRolloutQueued, rolloutEffects } from "../../domain/rollout.js";
import type { WorkerRecord } from "../../domain/worker.js";
import type { Changes } from "../../transitions/changes.js";
import { ATTEMPT_ROW_COLUMNS, attemptRow } from "../attempt-row.js";
import { encodeRolloutState } from "../rollout-codec.js";
import { WORKER_ROW_COLUMNS, workerRow } from "../worker-row.js";
import { base64, ms } from "./rows.js";

/**
 * The write of a turn (postgres/turn.ts): every row its operations changed,
 * in one statement whatever their number, as graphile-worker writes a batch:
 * each column travels as one array parameter and unnest() turns them back
 * into rows, so the text never changes and each connection plans it once.
 * One data-modifying CTE per kind of write, each on distinct rows:
 *
 * - `r`: changed rollouts, in place (their immutable message stays). A
 *   rollout back in the queue takes a new place at its back; the places are
 *   drawn in the turn's order (the ordered subquery is not flattened, so
 *   nextval() runs on its rows in that order); one that left the queue loses
 *   its place.
 * - `ai`, `au`: new attempts (claims) are inserted, changed ones updated.
 * - `wi`, `wu`: workers new to the store are inserted (or, should another
 *   server have created the same worker meanwhile, updated), changed ones
 *   updated; a worker whose session opened here is held by this server
 *   (replica_id). The written message carries the telemetry laid over the
 *   locked row, so the held-back telemetry column is cleared.
 *
 * New rollouts never come from a turn's transitions (EnqueueRollouts writes
 * them: enqueue-rollouts.ts).
 */
const WORKER_TYPES = [
  "text", // worker_id
  "integer", // status
  "integer", // capacity
  "bigint", // last_heartbeat_time
  "bigint", // last_dequeue_time
  "bigint", // last_busy_time
  "bigint", // last_idle_time
  "bigint", // connect_time
  "bigint", // create_time
  "text", // labels (JSON)
  "text", // attachment
  "boolean", // suspect
  "integer", // epoch
  "boolean", // cordoned
  "bigint", // version
  "text", // message (base64)
] as const;


const ATTEMPT_TYPES = ["text", "text", "integer", "text", "integer", "bigint", "bigint", "bigint", "bigint", "bigint", "text"] as const;

/** `unnest($k::type[], …)` over consecutive parameters from `first`. */
function unnestOf(types: readonly string[], first: number): string {
  return `unnest(${types.map((type, i) => `$${first + i}::${type}[]`).join(", ")})`;
}

/** A column's value from the unnested row `u`: base64 text decoded, JSON text cast. */
function valueOf(column: string): string {
  if (column === "message") return "decode(u.message, 'base64')";
  if (column === "labels") return "u.labels::jsonb";
  return `u.${column}`;
}

const ROLLOUT_PARAMS = 8;
const ATTEMPT_FIRST = 1 + ROLLOUT_PARAMS;
const ATTEMPT_UPDATE_FIRST = ATTEMPT_FIRST + ATTEMPT_ROW_COLUMNS.length;
const WORKER_FIRST = ATTEMPT_UPDATE_FIRST + ATTEMPT_ROW_COLUMNS.length;
/** Worker parameters: the row's columns, then replica_id and whether the session opened here. */
const WORKER_PARAMS = WORKER_ROW_COLUMNS.length + 2;
const WORKER_UPDATE_FIRST = WORKER_FIRST + WORKER_PARAMS;
const WORKER_INPUT = [...WORKER_ROW_COLUMNS, "replica_id", "opened"];
const WORKER_INPUT_TYPES = [...WORKER_TYPES, "text", "boolean"];

const attemptSet = ATTEMPT_ROW_COLUMNS.slice(1)
  .map((c) => `${c} = ${valueOf(c)}`)
  .join(", ");
const workerSet = WORKER_ROW_COLUMNS.slice(1)
  .map((c) => `${c} = ${valueOf(c)}`)
  .join(", ");

export const WRITE_TURN_SQL =
  "WITH r AS (UPDATE rollouts AS t SET status = u.status, attempt_count = u.attempt_count, start_time = u.start_time, " +
  "end_time = u.end_time, version = u.version, state = decode(u.state, 'base64'), " +
  "queue_seq = CASE u.queue WHEN 1 THEN u.seq WHEN 2 THEN NULL ELSE t.queue_seq END " +
  "FROM (SELECT v.*, CASE WHEN v.queue = 1 THEN nextval('rollout_queue_seq') END AS seq FROM " +
  "unnest($1::text[], $2::integer[], $3::integer[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[], $8::integer[]) " +
  "WITH ORDINALITY AS v(rollout_id, status, attempt_count, start_time, end_time, version, state, queue, n) ORDER BY n) AS u " +
  "WHERE t.rollout_id = u.rollout_id), " +
  `ai AS (INSERT INTO attempts (${ATTEMPT_ROW_COLUMNS.join(", ")}) SELECT ${ATTEMPT_ROW_COLUMNS.map(valueOf).join(", ")} ` +
  `FROM ${unnestOf(ATTEMPT_TYPES, ATTEMPT_FIRST)} AS u(${ATTEMPT_ROW_COLUMNS.join(", ")})), ` +
  `au AS (UPDATE attempts AS t SET ${attemptSet} FROM ${unnestOf(ATTEMPT_TYPES, ATTEMPT_UPDATE_FIRST)} ` +
  `AS u(${ATTEMPT_ROW_COLUMNS.join(", ")}) WHERE t.attempt_id = u.attempt_id), ` +
  `wi AS (INSERT INTO workers (${WORKER_ROW_COLUMNS.join(", ")}, replica_id, telemetry) ` +
  `SELECT ${WORKER_ROW_COLUMNS.map(valueOf).join(", ")}, u.replica_id, NULL FROM ${unnestOf(WORKER_INPUT_TYPES, WORKER_FIRST)} ` +
  `AS u(${WORKER_INPUT.join(", ")}) ON CONFLICT (worker_id) DO UPDATE SET ` +
  `${WORKER_ROW_COLUMNS.slice(1)
    .map((c) => `${c} = EXCLUDED.${c}`)
    .join(", ")}, replica_id = EXCLUDED.replica_id, telemetry = NULL), ` +
  `wu AS (UPDATE workers AS t SET ${workerSet}, replica_id = CASE WHEN u.opened THEN u.replica_id ELSE t.replica_id END, ` +
  `telemetry = NULL FROM ${unnestOf(WORKER_INPUT_TYPES, WORKER_UPDATE_FIRST)} AS u(${WORKER_INPUT.join(", ")}) ` +
  "WHERE t.worker_id = u.worker_id) " +
  "SELECT 1";

/** How a changed rollout's queue place moves: 0 kept, 1 a new place at the back, 2 none. */
function queueMove(before: Rollout | undefined, after: Rollout, requeued: ReadonlySet<string>): number {
  const effects = rolloutEffects(before, after);
  // Back in the queue during the turn (failed and requeued, say), even if it was queued when the turn began:
  // it goes to the back, as it would have in a transaction of its own.
  if (effects.enqueue || (requeued.has(after.rolloutId) && isRolloutQueued(after.status))) return 1;
  return effects.dequeue ? 2 : 0;
}

/** One array per column, for `rows` written by `row`. */
function columns<T>(rows: readonly T[], width: number, row: (item: T) => readonly unknown[]): unknown[][] {
  const arrays: unknown[][] = Array.from({ length: width }, () => new Array<unknown>(rows.length));
  rows.forEach((item, i) => {
    const values = row(item);
    for (let c = 0; c < width; c++) arrays[c]![i] = values[c];
  });
  return arrays;
}

function attemptValues(attempt: Attempt): unknown[] {
  const row = attemptRow(attempt);
  row[row.length - 1] = base64(row[row.length - 1] as Uint8Array);
  return row;
}

/**
 * The statement's parameters for a turn's changes; `requeued` went back to
 * the queue during the turn. New rollouts cannot be among them (a bug: it throws).
 */
export function writeTurnParams(changes: Changes, requeued: ReadonlySet<string>, replicaId: string | null): unknown[] {
  const created = changes.rollouts.find((c) => c.before === undefined);
  // The statement only updates rollouts: one written as new here would be lost without a word.
  if (created !== undefined) throw new Error(`postgres store: a turn created rollout ${created.after.rolloutId}; only EnqueueRollouts creates rollouts`);
  const rollouts = columns(changes.rollouts, ROLLOUT_PARAMS, ({ before, after }) => [
    after.rolloutId,
    after.status,
    after.attemptCount,
    ms(after.startTime),
    ms(after.endTime),
    after.version,
    base64(encodeRolloutState(after)),
    queueMove(before, after, requeued),
  ]);
  const newAttempts = changes.attempts.filter((c) => c.before === undefined).map((c) => c.after);
  const changedAttempts = changes.attempts.filter((c) => c.before !== undefined).map((c) => c.after);
  const workerValues = ({ before, after }: { before: WorkerRecord | undefined; after: WorkerRecord }) => {
    const row = workerRow(after);
    row[row.length - 1] = base64(row[row.length - 1] as Uint8Array);
    // A session opened here (its epoch moved): this server holds it now.
    return [...row, replicaId, before === undefined || before.epoch !== after.epoch];
  };
  return [
    ...rollouts,
    ...columns(newAttempts, ATTEMPT_ROW_COLUMNS.length, attemptValues),
    ...columns(changedAttempts, ATTEMPT_ROW_COLUMNS.length, attemptValues),
    ...columns(
      changes.workers.filter((c) => c.before === undefined),
      WORKER_PARAMS,
      workerValues,
    ),
    ...columns(
      changes.workers.filter((c) => c.before !== undefined),
      WORKER_PARAMS,
      workerValues,
    ),
  ];
}
