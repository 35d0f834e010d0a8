import { toBinary } from "@bufbuild/protobuf";
import { WorkerSchema } from "../../gen/runnerline/v1/worker_pb.js";
import { msOf } from "../domain/time.js";
import type { WorkerRecord } from "../domain/worker.js";

/**
 * A worker as a database row, the same for SQLite and PostgreSQL: the indexed
 * columns lists filter and sort on (named as the sort catalog's fields), the
 * facts its status derives from, and the message itself. Values come in the
 * order of WORKER_ROW_COLUMNS; each store adds its own columns after them.
 */
export const WORKER_ROW_COLUMNS = [
  "worker_id",
  "status",
  "capacity",
  "last_heartbeat_time",
  "last_dequeue_time",
  "last_busy_time",
  "last_idle_time",
  "connect_time",
  "create_time",
  "labels",
  "attachment",
  "suspect",
  "epoch",
  "cordoned",
  "version",
  "message",
] as const;

export function workerRow(record: WorkerRecord): (string | number | bigint | boolean | Uint8Array | null)[] {
  const { worker } = record;
  const ms = (timestamp: Parameters<typeof msOf>[0]) => msOf(timestamp) ?? null;
  return [
    worker.workerId,
    worker.status,
    worker.capacity,
    ms(worker.lastHeartbeatTime),
    ms(worker.lastDequeueTime),
    ms(worker.lastBusyTime),
    ms(worker.lastIdleTime),
    ms(worker.connectTime),
    ms(worker.createTime),
    JSON.stringify(worker.labels),
    record.attachment,
    record.suspect,
    record.epoch,
    worker.cordoned,
    worker.version,
    toBinary(WorkerSchema, worker),
  ];
}
