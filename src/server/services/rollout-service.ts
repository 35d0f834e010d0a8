import type { ServiceImpl } from "@connectrpc/connect";
import { AttemptStatus } from "../../gen/runnerline/v1/attempt_pb.js";
import {
  type EnqueueRolloutRequest,
  EnqueueRolloutRequestSchema,
  RolloutMode,
  RolloutSchema,
  RolloutService,
  RolloutStatus,
} from "../../gen/runnerline/v1/rollout_pb.js";
import { RETRYABLE_STATUSES } from "../domain/attempt.js";
import { invalidArgument } from "../domain/errors.js";
import { labelProblem } from "../domain/labels.js";
import type { Coordinator } from "../dispatch/coordinator.js";
import type { Clock } from "../domain/time.js";
import type { Store } from "../store/store.js";
import { ROLLOUT_SORT_FIELDS } from "../store/query.js";
import { durable } from "./durable.js";
import { listQuery, nextPageToken } from "./paging.js";
import {
  nonNegativeDurationMs,
  requireClientId,
  requireEnumValue,
  requireEnumValues,
  requireFilter,
  requireId,
} from "./validation.js";
import { requireJsonSafe } from "./well-known-types.js";

export const MAX_BATCH = 10_000;
const MAX_ATTEMPTS_LIMIT = 100;

export function rolloutService(coordinator: Coordinator, store: Store, clock: Clock): ServiceImpl<typeof RolloutService> {
  return {
    async enqueueRollout(request) {
      const [rollout] = await coordinator.enqueue([validEnqueue(request, "")]);
      return { rollout };
    },
    async enqueueRollouts(request) {
      if (request.requests.length === 0) throw invalidArgument("requests must not be empty");
      if (request.requests.length > MAX_BATCH) throw invalidArgument(`at most ${MAX_BATCH} requests per batch`);
      const valid = request.requests.map((r, i) => validEnqueue(r, `requests[${i}].`));
      return { rollouts: await coordinator.enqueue(valid) };
    },
    async getRollout(request) {
      return durable(store, { rollout: coordinator.getRollout(requireId("rollout_id", request.rolloutId)) });
    },
    async listRollouts(request) {
      const filter = {
        statuses: requireEnumValues("statuses", request.statuses, RolloutStatus),
        idContains: request.rolloutIdContains,
        onlyIds: request.unroutableOnly ? new Set(coordinator.unroutableRolloutIds()) : undefined,
        expression: requireFilter(request.filter, RolloutSchema, clock.now()),
      };
      const query = listQuery(request, filter, ROLLOUT_SORT_FIELDS, "rollout_id", "create_time");
      const page = store.listRollouts(query);
      return durable(store, { rollouts: page.items, totalSize: page.total, nextPageToken: nextPageToken(query, page.total) });
    },
    async cancelRollout(request) {
      return { rollout: await coordinator.cancel(requireId("rollout_id", request.rolloutId)) };
    },
    async dequeueRollout(request) {
      const assigned = await coordinator.dequeueFor(requireClientId("worker_id", request.workerId));
      return assigned ?? {};
    },
    async waitRollouts(request, context) {
      if (request.rolloutIds.length === 0) throw invalidArgument("rollout_ids must not be empty");
      if (request.rolloutIds.length > MAX_BATCH) throw invalidArgument(`at most ${MAX_BATCH} rollout_ids`);
      request.rolloutIds.forEach((id, i) => requireId(`rollout_ids[${i}]`, id));
      const timeoutMs = nonNegativeDurationMs("timeout", request.timeout);
      return { rollouts: await coordinator.waitFor(request.rolloutIds, timeoutMs, context.signal) };
    },
  };
}

function validEnqueue(request: EnqueueRolloutRequest, prefix: string): EnqueueRolloutRequest {
  if (request.rolloutId !== "") requireClientId(`${prefix}rollout_id`, request.rolloutId);
  requireJsonSafe(EnqueueRolloutRequestSchema, request, prefix);
  requireEnumValue(`${prefix}mode`, request.mode, RolloutMode, { allowUnspecified: true });
  const config = request.config;
  if (config !== undefined) {
    nonNegativeDurationMs(`${prefix}config.timeout`, config.timeout);
    nonNegativeDurationMs(`${prefix}config.unresponsive_timeout`, config.unresponsiveTimeout);
    nonNegativeDurationMs(`${prefix}config.deadline`, config.deadline);
    nonNegativeDurationMs(`${prefix}config.queue_timeout`, config.queueTimeout);
    if (config.maxAttempts < 0 || config.maxAttempts > MAX_ATTEMPTS_LIMIT) {
      throw invalidArgument(`${prefix}config.max_attempts must be between 0 and ${MAX_ATTEMPTS_LIMIT}`);
    }
    const labelError = labelProblem(`${prefix}config.required_labels`, config.requiredLabels);
    if (labelError !== undefined) throw invalidArgument(labelError);
    const delayMs = nonNegativeDurationMs(`${prefix}config.retry_delay`, config.retryDelay);
    const maxDelayMs = nonNegativeDurationMs(`${prefix}config.max_retry_delay`, config.maxRetryDelay);
    if (delayMs !== undefined && maxDelayMs !== undefined && maxDelayMs > 0 && maxDelayMs < delayMs) {
      throw invalidArgument(`${prefix}config.max_retry_delay must not be shorter than config.retry_delay`);
    }
    const coefficient = config.retryBackoffCoefficient;
    if (coefficient !== 0 && !(Number.isFinite(coefficient) && coefficient >= 1)) {
      throw invalidArgument(`${prefix}config.retry_backoff_coefficient must be at least 1 (or 0 for the default 2.0), not ${coefficient}`);
    }
    for (const status of config.retryOn) {
      if (!RETRYABLE_STATUSES.has(status)) {
        throw invalidArgument(
          `${prefix}config.retry_on may only name FAILED, TIMEOUT and UNRESPONSIVE, not ${AttemptStatus[status] ?? status}`,
        );
      }
    }
  }
  return request;
}

