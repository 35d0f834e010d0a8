import { create } from "@bufbuild/protobuf";
import { type SessionResponse, SessionResponseSchema } from "../../../gen/runnerline/v1/runner_pb.js";
import type { Worker } from "../../../gen/runnerline/v1/worker_pb.js";
import { type Millis, toTimestamp } from "../../domain/time.js";
import type { SessionFence } from "../../transitions/steps.js";
import type { SessionLink } from "../session-link.js";

/** The fence of writes made for a session (undefined for calls made outside one). */
export function fenceOf(link: SessionLink | undefined): SessionFence | undefined {
  return link?.epoch === undefined ? undefined : { workerId: link.workerId, epoch: link.epoch };
}

/** The Drain that tells a drained worker's runner to finish what it holds and exit. */
export function operatorDrainMessage(worker: Worker): SessionResponse {
  const reason = worker.cordonReason === "" ? "drained by an operator" : `drained by an operator: ${worker.cordonReason}`;
  return create(SessionResponseSchema, { message: { case: "drain", value: { reason, exit: true } } });
}

/** Tells a runner to stop an attempt. */
export function cancelMessage(attemptId: string, reason: string): SessionResponse {
  return create(SessionResponseSchema, { message: { case: "cancel", value: { attemptId, reason } } });
}

/**
 * The answer to each heartbeat, written as the plain object protobuf-es makes
 * (its create() walks the schema on every call, and every runner beats every
 * few seconds).
 */
export function heartbeatAckMessage(sequence: bigint, now: Millis): SessionResponse {
  return {
    $typeName: "runnerline.v1.SessionResponse",
    message: { case: "heartbeatAck", value: { $typeName: "runnerline.v1.HeartbeatAck", sequence, serverTime: toTimestamp(now) } },
  };
}
