import type pg from "pg";
import { type Attempt, AttemptSchema } from "../../../gen/runnerline/v1/attempt_pb.js";
import type { Rollout } from "../../../gen/runnerline/v1/rollout_pb.js";
import { type Worker, WorkerSchema } from "../../../gen/runnerline/v1/worker_pb.js";
import { msOf } from "../../domain/time.js";
import type { Attachment, WorkerRecord } from "../../domain/worker.js";
import { decodeRecord } from "../decode-record.js";
import { decodeRollout } from "../rollout-codec.js";
import { withTelemetry } from "../worker-telemetry.js";

/**
 * What every statement of the PostgreSQL store shares: how a statement is
 * sent (prepared by name when its text is one of the usual few) and how the
 * rows it reads become records.
 */

export type Row = Record<string, unknown>;

/** Statement texts prepared by name: parsed and planned once per connection instead of on every call. */
const preparedNames = new Map<string, string>();
/** Texts beyond this many (the combined writes of unusual shapes) are sent unnamed, so no connection hoards plans. */
const MAX_PREPARED = 400;

/** Runs a statement, prepared by name when its text is one of the usual few. */
export function run(client: pg.ClientBase | pg.Pool, text: string, values: unknown[] = []): Promise<pg.QueryResult<Row>> {
  let name = preparedNames.get(text);
  if (name === undefined && preparedNames.size < MAX_PREPARED && text.length < 8_000) {
    name = `rl${preparedNames.size}`;
    preparedNames.set(text, name);
  }
  return name === undefined ? client.query(text, values) : client.query({ name, text, values });
}

/** The worker columns every read of a worker record takes. */
export const WORKER_READ = "worker_id, attachment, suspect, epoch, message, telemetry";

export function rolloutOf(row: Row): Rollout {
  return decodeRollout(row.message as Uint8Array, row.state as Uint8Array | null);
}

export function attemptOf(row: Row): Attempt {
  return decodeRecord(AttemptSchema, row.message as Uint8Array);
}

export function workerMessageOf(row: Row): Worker {
  return withTelemetry(decodeRecord(WorkerSchema, row.message as Uint8Array), row.telemetry as Uint8Array | null);
}

export function workerOf(row: Row): WorkerRecord {
  return {
    worker: workerMessageOf(row),
    attachment: row.attachment as Attachment,
    suspect: row.suspect as boolean,
    epoch: row.epoch as number,
  };
}

/** A time stamp as the bigint milliseconds column holds it (NULL when unset). */
export const ms = (timestamp: Parameters<typeof msOf>[0]) => msOf(timestamp) ?? null;

/**
 * Bytes as base64 text, for a text[] parameter that the statement decodes: pg writes a bytea[] parameter as
 * escaped hex, several times the CPU.
 */
export const base64 = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
