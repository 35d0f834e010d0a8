import { clone, create, toBinary } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { AttemptStatus } from "../../gen/runnerline/v1/attempt_pb.js";
import {
  type EnqueueRolloutRequest,
  EnqueueRolloutRequestSchema,
  type Rollout,
  RolloutConfigSchema,
  RolloutMode,
  RolloutSchema,
  RolloutService,
  RolloutStatus,
  RolloutView,
} from "../../gen/runnerline/v1/rollout_pb.js";
import { RETRYABLE_STATUSES } from "../domain/attempt.js";
import { invalidArgument } from "../domain/errors.js";
import { labelProblem } from "../domain/labels.js";
import type { Coordinator } from "../dispatch/coordinator.js";
import type { Clock } from "../domain/time.js";
import type { Store } from "../store/store.js";
import { ROLLOUT_SORT_FIELDS } from "../store/query.js";
import { durable } from "./durable.js";
import { type Limits, requireBoundedJson, requireQueueRoom } from "./limits.js";
import { fitToBytes, listQuery, nextPageToken } from "./paging.js";
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
const MAX_TIMER_MS = 2 ** 31 - 1;

/** What the server fills in for a rollout that leaves it unset. */
export interface RolloutDefaults {
  /** config.timeout; 0: none (the rollout's attempts run without a limit). */
  timeoutMs: number;
}

export function rolloutService(
  coordinator: Coordinator,
  store: Store,
  clock: Clock,
  limits: Limits,
  defaults: RolloutDefaults = { timeoutMs: 0 },
): ServiceImpl<typeof RolloutService> {
  const validEnqueue = (request: EnqueueRolloutRequest, prefix: string, limits: Limits) =>
    withDefaults(validatedEnqueue(request, prefix, limits), defaults);
  return {
    async enqueueRollout(request) {
      const valid = validEnqueue(request, "", limits);
      requireQueueRoom(await store.queueLength(), 1, limits);
      const [rollout] = await coordinator.enqueue([valid]);
      return { rollout };
    },
    async enqueueRollouts(request) {
      if (request.requests.length === 0) throw invalidArgument("requests must not be empty");
      if (request.requests.length > MAX_BATCH) throw invalidArgument(`at most ${MAX_BATCH} requests per batch`);
      const valid = request.requests.map((r, i) => validEnqueue(r, `requests[${i}].`, limits));
      // Repeated idempotency keys count too: the bound errs on the safe side.
      requireQueueRoom(await store.queueLength(), valid.length, limits);
      return { rollouts: await coordinator.enqueue(valid) };
    },
    async getRollout(request) {
      return durable(store, { rollout: await coordinator.getRollout(requireId("rollout_id", request.rolloutId)) });
    },
    async listRollouts(request) {
      const filter = {
        statuses: requireEnumValues("statuses", request.statuses, RolloutStatus),
        idContains: request.rolloutIdContains,
        onlyIds: request.unroutableOnly ? new Set(await coordinator.unroutableRolloutIds()) : undefined,
        expression: requireFilter(request.filter, RolloutSchema, clock.now()),
      };
      const view = requireView(request.view);
      const query = listQuery(request, filter, ROLLOUT_SORT_FIELDS, "rollout_id", "create_time");
      const page = await store.listRollouts(query);
      const rollouts = fitToBytes(page.items.map(view), rolloutBytes, limits.maxResponseBytes);
      return durable(store, {
        rollouts,
        totalSize: page.total,
        nextPageToken: nextPageToken(query, page.total, rollouts.length),
      });
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
      const view = requireView(request.view);
      const timeoutMs = nonNegativeDurationMs("timeout", request.timeout);
      // Node turns a timer over 2^31-1 ms (~24.8 days) into 1 ms; a wait that
      // long is bounded by the call's deadline instead, like an unset timeout.
      const waitMs = timeoutMs !== undefined && timeoutMs > MAX_TIMER_MS ? undefined : timeoutMs;
      const finished = (await coordinator.waitFor(request.rolloutIds, waitMs, context.signal)).map(view);
      const rollouts = fitToBytes(finished, rolloutBytes, limits.maxResponseBytes);
      return { rollouts, remainingRolloutIds: finished.slice(rollouts.length).map((r) => r.rolloutId) };
    },
  };
}

/**
 * The server's default attempt timeout, written into the rollout's config
 * when it has none, so GetRollout, runners and every replica see the same
 * limit, and a later change of the default leaves enqueued rollouts alone. An
 * explicit 0s keeps "no limit".
 */
function withDefaults(request: EnqueueRolloutRequest, defaults: RolloutDefaults): EnqueueRolloutRequest {
  if (defaults.timeoutMs <= 0 || request.config?.timeout !== undefined) return request;
  // A copy: the caller's request is left as it was.
  const config = request.config === undefined ? create(RolloutConfigSchema) : clone(RolloutConfigSchema, request.config);
  config.timeout = durationFromMs(defaults.timeoutMs);
  return { ...request, config };
}

function validatedEnqueue(request: EnqueueRolloutRequest, prefix: string, limits: Limits): EnqueueRolloutRequest {
  if (request.rolloutId !== "") requireClientId(`${prefix}rollout_id`, request.rolloutId);
  requireJsonSafe(EnqueueRolloutRequestSchema, request, prefix);
  requireBoundedJson(`${prefix}input`, request.input, limits.maxInputBytes);
  requireBoundedJson(`${prefix}metadata`, request.metadata, limits.maxMetadataBytes);
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


/** The rollout as the requested view shows it. */
function requireView(view: RolloutView): (rollout: Rollout) => Rollout {
  requireEnumValue("view", view, RolloutView, { allowUnspecified: true });
  return view === RolloutView.BASIC ? basicView : fullView;
}

const fullView = (rollout: Rollout) => rollout;
const basicView = (rollout: Rollout): Rollout => ({ ...rollout, input: undefined, metadata: undefined, result: undefined });
const rolloutBytes = (rollout: Rollout) => toBinary(RolloutSchema, rollout).byteLength;
