import type { WorkerRecord } from "../../domain/worker.js";
import { encodeTelemetry } from "../worker-telemetry.js";
import { base64, ms } from "./rows.js";

/**
 * The telemetry held back for a batch of workers (heartbeats, work requests:
 * docs/scaleout.md), written in one statement: only the telemetry columns,
 * so a stale view of the rest of a worker changes nothing in the database.
 */
export const WRITE_TELEMETRY_SQL =
  "UPDATE workers AS w SET telemetry = decode(t.telemetry, 'base64'), last_heartbeat_time = t.heartbeat, last_dequeue_time = t.dequeue " +
  "FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS t(worker_id, telemetry, heartbeat, dequeue) " +
  "WHERE w.worker_id = t.worker_id";

/**
 * Locks the batch's workers by id, as a turn locks them (lock-turn.ts), before
 * WRITE_TELEMETRY_SQL updates them in whatever order its join takes: without
 * it, a flush and a turn that both hold one worker and want the other's
 * deadlock, and PostgreSQL breaks the cycle only after deadlock_timeout (1 s).
 */
export const LOCK_TELEMETRY_SQL = "SELECT worker_id FROM workers WHERE worker_id = ANY($1::text[]) ORDER BY worker_id FOR UPDATE";

/** The statement's parameters for `records`: one array per column. */
export function writeTelemetryParams(records: readonly WorkerRecord[]): unknown[] {
  return [
    records.map((r) => r.worker.workerId),
    records.map((r) => base64(encodeTelemetry(r.worker))),
    records.map((r) => ms(r.worker.lastHeartbeatTime)),
    records.map((r) => ms(r.worker.lastDequeueTime)),
  ];
}
