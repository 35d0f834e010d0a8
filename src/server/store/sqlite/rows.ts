import { WorkerSchema } from "../../../gen/runnerline/v1/worker_pb.js";
import { msOf } from "../../domain/time.js";
import type { Attachment, WorkerRecord } from "../../domain/worker.js";
import { decodeRecord } from "../decode-record.js";

/**
 * What every statement of the SQLite store shares: the values it binds, and
 * the rows it reads and how they become records.
 */

export type SqlValue = string | number | bigint | Uint8Array | null;
/** A row as lists read it: the message, and for rollouts the state that overrides its mutable fields. */
export type Decoded = { message: Uint8Array; state?: Uint8Array | null };

export interface WorkerRow {
  worker_id: string;
  attachment: string;
  suspect: number;
  epoch: number;
  message: Uint8Array;
}

export function workerRecordOf(row: WorkerRow): WorkerRecord {
  return {
    worker: decodeRecord(WorkerSchema, row.message),
    attachment: row.attachment as Attachment,
    suspect: row.suspect !== 0,
    epoch: row.epoch,
  };
}

/** What a list reads of each row (see Decoded). */
export const columnsOf = (table: string) => (table === "rollouts" ? "message, state" : "message");

export const ms = (timestamp: Parameters<typeof msOf>[0]) => msOf(timestamp) ?? null;
