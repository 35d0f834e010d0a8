import { toBinary } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { AttemptSchema, AttemptService, AttemptStatus } from "../../gen/runnerline/v1/attempt_pb.js";
import { REPORTABLE_STATUSES } from "../domain/attempt.js";
import { invalidArgument } from "../domain/errors.js";
import type { Coordinator } from "../dispatch/coordinator.js";
import { ATTEMPT_SORT_FIELDS } from "../store/query.js";
import type { Store } from "../store/store.js";
import { durable } from "./durable.js";
import { type Limits, requireBoundedJson } from "./limits.js";
import { fitToBytes, listQuery, nextPageToken } from "./paging.js";
import { requireEnumValues, requireId } from "./validation.js";

export function attemptService(coordinator: Coordinator, store: Store, limits: Limits): ServiceImpl<typeof AttemptService> {
  return {
    async getAttempt(request) {
      return durable(store, { attempt: coordinator.getAttempt(requireId("attempt_id", request.attemptId)) });
    },
    async listAttempts(request) {
      const filter = {
        rolloutId: request.rolloutId,
        workerId: request.workerId,
        statuses: requireEnumValues("statuses", request.statuses, AttemptStatus),
      };
      const query = listQuery(request, filter, ATTEMPT_SORT_FIELDS, "attempt_id", "create_time");
      const page = store.listAttempts(query);
      const attempts = fitToBytes(page.items, (a) => toBinary(AttemptSchema, a).byteLength, limits.maxResponseBytes);
      return durable(store, { attempts, totalSize: page.total, nextPageToken: nextPageToken(query, page.total, attempts.length) });
    },
    async updateAttempt(request) {
      requireId("attempt_id", request.attemptId);
      requireReportableStatus(request.status);
      requireBoundedJson("metadata", request.metadata, limits.maxMetadataBytes);
      const attempt = await coordinator.report(request.attemptId, request, {
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
