import { toBinary } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { AttemptSchema, AttemptService, AttemptStatus, type UpdateAttemptRequest, UpdateAttemptRequestSchema } from "../../gen/runnerline/v1/attempt_pb.js";
import { type AttemptReport, REPORTABLE_STATUSES } from "../domain/attempt.js";
import { invalidArgument } from "../domain/errors.js";
import type { Coordinator } from "../dispatch/coordinator.js";
import type { Clock } from "../domain/time.js";
import { ATTEMPT_SORT_FIELDS } from "../store/query.js";
import type { Store } from "../store/store.js";
import { durable } from "./durable.js";
import { type Limits, requireBoundedJson } from "./limits.js";
import { fitToBytes, listQuery, nextPageToken } from "./paging.js";
import { boundedResult, optionalId, optionalTimestampMs, requireEnumValues, requireFilter, requireId } from "./validation.js";
import { requireJsonSafe } from "./well-known-types.js";

export function attemptService(coordinator: Coordinator, store: Store, clock: Clock, limits: Limits): ServiceImpl<typeof AttemptService> {
  return {
    async getAttempt(request) {
      return durable(store, { attempt: await coordinator.getAttempt(requireId("attempt_id", request.attemptId)) });
    },
    async listAttempts(request) {
      const filter = {
        rolloutId: optionalId("rollout_id", request.rolloutId),
        workerId: optionalId("worker_id", request.workerId),
        statuses: requireEnumValues("statuses", request.statuses, AttemptStatus),
        expression: requireFilter(request.filter, AttemptSchema, clock.now()),
      };
      const query = listQuery(request, filter, ATTEMPT_SORT_FIELDS, "attempt_id", "create_time");
      const page = await store.listAttempts(query);
      const attempts = fitToBytes(page.items, (a) => toBinary(AttemptSchema, a).byteLength, limits.maxResponseBytes);
      return durable(store, { attempts, totalSize: page.total, nextPageToken: nextPageToken(query, page.total, attempts.length) });
    },
    async updateAttempt(request) {
      requireId("attempt_id", request.attemptId);
      requireReportableStatus(request.status);
      requireJsonSafe(UpdateAttemptRequestSchema, request);
      requireBoundedJson("metadata", request.metadata, limits.maxMetadataBytes);
      boundedResult(request.result);
      const attempt = await coordinator.report(request.attemptId, attemptReport(request), {
        expectedVersion: request.expectedVersion,
      });
      return { attempt };
    },
  };
}

/** Runners report RUNNING, SUCCEEDED or FAILED; the other statuses are the server's to set. */
export function requireReportableStatus(status: AttemptStatus) {
  if (!REPORTABLE_STATUSES.has(status)) {
    throw invalidArgument(
      `status ${AttemptStatus[status] ?? status} cannot be reported; use RUNNING, SUCCEEDED or FAILED (or leave it unset)`,
    );
  }
}

/** A runner's report as the coordinator takes it, from UpdateAttemptRequest or a session's AttemptUpdate. */
export function attemptReport(
  update: Pick<UpdateAttemptRequest, "status" | "errorMessage" | "metadata" | "result" | "finishTime">,
): AttemptReport {
  return {
    status: update.status,
    errorMessage: update.errorMessage,
    metadata: update.metadata,
    result: update.result,
    finishTime: optionalTimestampMs("finish_time", update.finishTime),
  };
}
