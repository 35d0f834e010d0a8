import { create } from "@bufbuild/protobuf";
import { type SessionResponse, SessionResponseSchema } from "../../../gen/runnerline/v1/runner_pb.js";
import type { SessionFence } from "../../transitions/steps.js";
import type { SessionLink } from "../session-link.js";

/** The fence of writes made for a session (undefined for calls made outside one). */
export function fenceOf(link: SessionLink | undefined): SessionFence | undefined {
  return link?.epoch === undefined ? undefined : { workerId: link.workerId, epoch: link.epoch };
}

/** Tells a runner to stop an attempt. */
export function cancelMessage(attemptId: string, reason: string): SessionResponse {
  return create(SessionResponseSchema, { message: { case: "cancel", value: { attemptId, reason } } });
}
