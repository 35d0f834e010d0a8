import { toBinary } from "@bufbuild/protobuf";
import { type Rollout, RolloutSchema } from "../../../gen/runnerline/v1/rollout_pb.js";
import { DomainError } from "../../domain/errors.js";
import { rolloutEffects } from "../../domain/rollout.js";
import type { Changes } from "../../transitions/changes.js";
import { base64, ms } from "./rows.js";

/**
 * Enqueue of a batch of new rollouts as one statement, whatever the batch's
 * size: every column travels as one array parameter and unnest() turns them
 * back into rows (graphile-worker's add_jobs does the same). One statement is
 * atomic, so no BEGIN/COMMIT is needed: the batch is inserted whole or, when
 * one of its ids is taken, not at all (the primary key refuses it, SQLSTATE
 * 23505, which becomes ALREADY_EXISTS as before). The rows are numbered as
 * given and take their queue places in that order, so a batch is dispatched
 * front to back.
 */
export const ENQUEUE_ROLLOUTS_SQL =
  "INSERT INTO rollouts (rollout_id, status, mode, attempt_count, create_time, start_time, end_time, version, priority, message, state, queue_seq) " +
  "SELECT r.rollout_id, r.status, r.mode, r.attempt_count, r.create_time, r.start_time, r.end_time, r.version, r.priority, " +
  "decode(r.message, 'base64'), NULL, CASE WHEN r.queued THEN nextval('rollout_queue_seq') END " +
  // The ordered subquery is not flattened, so nextval() runs on its rows in the batch's order.
  "FROM (SELECT * FROM unnest($1::text[], $2::integer[], $3::integer[], $4::integer[], $5::bigint[], $6::bigint[], $7::bigint[], " +
  "$8::bigint[], $9::integer[], $10::text[], $11::boolean[]) WITH ORDINALITY " +
  "AS t(rollout_id, status, mode, attempt_count, create_time, start_time, end_time, version, priority, message, queued, n) ORDER BY n) AS r";

/** The statement's parameters for `rollouts`: one array per column, in the batch's order. */
export function enqueueRolloutsParams(rollouts: readonly Rollout[]): unknown[] {
  return [
    rollouts.map((r) => r.rolloutId),
    rollouts.map((r) => r.status),
    rollouts.map((r) => r.mode),
    rollouts.map((r) => r.attemptCount),
    rollouts.map((r) => ms(r.createTime)),
    rollouts.map((r) => ms(r.startTime)),
    rollouts.map((r) => ms(r.endTime)),
    rollouts.map((r) => r.version),
    rollouts.map((r) => r.priority),
    rollouts.map((r) => base64(toBinary(RolloutSchema, r))),
    rollouts.map((r) => rolloutEffects(undefined, r).enqueue),
  ];
}

/** What an enqueue wrote: every rollout new. */
export function enqueuedChanges(rollouts: readonly Rollout[]): Changes {
  return { rollouts: rollouts.map((after) => ({ before: undefined, after })), attempts: [], workers: [] };
}

/** A taken id (unique violation) as the seam's ALREADY_EXISTS; anything else as it is. */
export function alreadyExistsOr(error: unknown): unknown {
  if ((error as { code?: string }).code !== "23505") return error;
  return new DomainError("already_exists", `rollout ${(error as { detail?: string }).detail ?? ""} exists`);
}
