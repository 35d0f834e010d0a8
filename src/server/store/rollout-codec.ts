import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Rollout, RolloutSchema } from "../../gen/runnerline/v1/rollout_pb.js";
import { fullShape } from "../domain/full-shape.js";

/**
 * A rollout as two encodings, so that a database writes its immutable part
 * (input, config, metadata: possibly large) once at enqueue and each
 * transition rewrites only the small mutable part:
 * - the spec: everything that never changes after enqueue. A store may
 *   simply keep the whole rollout as enqueued (one encoding at insert): its
 *   mutable fields are overridden by the state once there is one;
 * - the state: the fields transitions change, which override the spec's
 *   when both are read.
 */

/** The fields transitions change; every other field is fixed at enqueue. */
type StateField =
  | "status"
  | "startTime"
  | "endTime"
  | "attemptCount"
  | "latestAttemptId"
  | "version"
  | "failureReason"
  | "result"
  | "nextAttemptTime";

export function encodeRolloutState(rollout: Rollout): Uint8Array {
  return toBinary(RolloutSchema, create(RolloutSchema, stateOf(rollout)));
}

/** The rollout from its spec and, when set, its state; with every field present (domain/full-shape.ts). */
export function decodeRollout(spec: Uint8Array, state: Uint8Array | null | undefined): Rollout {
  const rollout = fromBinary(RolloutSchema, spec);
  if (state !== null && state !== undefined) Object.assign(rollout, stateOf(fromBinary(RolloutSchema, state)));
  return fullShape(RolloutSchema, rollout);
}

function stateOf(rollout: Rollout): Pick<Rollout, StateField> {
  return {
    status: rollout.status,
    startTime: rollout.startTime,
    endTime: rollout.endTime,
    attemptCount: rollout.attemptCount,
    latestAttemptId: rollout.latestAttemptId,
    version: rollout.version,
    failureReason: rollout.failureReason,
    result: rollout.result,
    nextAttemptTime: rollout.nextAttemptTime,
  };
}
