import { toBinary } from "@bufbuild/protobuf";
import { type Attempt, AttemptSchema } from "../../gen/runnerline/v1/attempt_pb.js";
import { msOf } from "../domain/time.js";

/**
 * An attempt as a database row, the same for SQLite and PostgreSQL (as
 * worker-row.ts is for workers): the columns lists filter and sort on, and
 * the message itself. Values come in the order of ATTEMPT_ROW_COLUMNS.
 */
export const ATTEMPT_ROW_COLUMNS = [
  "attempt_id",
  "rollout_id",
  "sequence_id",
  "worker_id",
  "status",
  "create_time",
  "start_time",
  "end_time",
  "last_heartbeat_time",
  "version",
  "message",
] as const;

export function attemptRow(attempt: Attempt): (string | number | bigint | Uint8Array | null)[] {
  const ms = (timestamp: Parameters<typeof msOf>[0]) => msOf(timestamp) ?? null;
  return [
    attempt.attemptId,
    attempt.rolloutId,
    attempt.sequenceId,
    attempt.workerId,
    attempt.status,
    ms(attempt.createTime),
    ms(attempt.startTime),
    ms(attempt.endTime),
    ms(attempt.lastHeartbeatTime),
    attempt.version,
    toBinary(AttemptSchema, attempt),
  ];
}
