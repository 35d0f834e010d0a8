import { create } from "@bufbuild/protobuf";
import { AttemptStatus, type Attempt } from "../../gen/runnerline/v1/attempt_pb.js";
import {
  type EnqueueRolloutRequest,
  type Rollout,
  type RolloutConfig,
  RolloutConfigSchema,
  RolloutSchema,
  RolloutStatus,
} from "../../gen/runnerline/v1/rollout_pb.js";
import { failedPrecondition } from "./errors.js";
import { type Millis, msOf, msOfDuration, toTimestamp } from "./time.js";
import { fullShape } from "./full-shape.js";

const TERMINAL = new Set([RolloutStatus.SUCCEEDED, RolloutStatus.FAILED, RolloutStatus.CANCELLED]);
const QUEUED = new Set([RolloutStatus.QUEUING, RolloutStatus.REQUEUING]);

export const isRolloutTerminal = (status: RolloutStatus) => TERMINAL.has(status);
export const isRolloutQueued = (status: RolloutStatus) => QUEUED.has(status);

/** What the outside world must do because a rollout changed. */
export interface RolloutEffects {
  /** It entered the queue: append it to the back. */
  enqueue: boolean;
  /** It left the queue (dispatched, revived or cancelled). */
  dequeue: boolean;
  /** It reached a terminal status: wake whoever waits for it. */
  finished: boolean;
}

/** The effects follow from the two states alone, so no transition can forget one. */
export function rolloutEffects(before: Rollout | undefined, after: Rollout): RolloutEffects {
  const wasQueued = before !== undefined && isRolloutQueued(before.status);
  const isQueued = isRolloutQueued(after.status);
  const wasTerminal = before !== undefined && isRolloutTerminal(before.status);
  return {
    enqueue: isQueued && !wasQueued,
    dequeue: wasQueued && !isQueued,
    finished: isRolloutTerminal(after.status) && !wasTerminal,
  };
}

export function newRollout(request: EnqueueRolloutRequest, rolloutId: string, now: Millis): Rollout {
  return fullShape(
    RolloutSchema,
    create(RolloutSchema, {
      rolloutId,
      input: request.input,
      mode: request.mode,
      resourcesId: request.resourcesId,
      metadata: request.metadata ?? {},
      config: request.config ?? create(RolloutConfigSchema),
      status: RolloutStatus.QUEUING,
      createTime: toTimestamp(now),
      priority: request.priority,
      version: 1n,
    }),
  );
}

export function maxAttempts(rollout: Rollout): number {
  return Math.max(1, rollout.config?.maxAttempts ?? 1);
}

/** A queued rollout handed to a worker as `attempt`. */
export function dispatchRollout(rollout: Rollout, attempt: Attempt, now: Millis): Rollout {
  if (!isRolloutQueued(rollout.status)) {
    throw failedPrecondition(`rollout ${rollout.rolloutId} is ${RolloutStatus[rollout.status]}, not queued`);
  }
  return {
    ...rollout,
    status: RolloutStatus.PREPARING,
    startTime: rollout.startTime ?? toTimestamp(now),
    attemptCount: attempt.sequenceId,
    latestAttemptId: attempt.attemptId,
    ...(rollout.nextAttemptTime !== undefined && { nextAttemptTime: undefined }),
    version: rollout.version + 1n,
  };
}

/**
 * The rollout status implied by its latest attempt: it follows the attempt,
 * except that a failed attempt requeues the rollout when the retry policy
 * allows another try.
 */
export function rolloutStatusFor(rollout: Rollout, attempt: Attempt): RolloutStatus {
  switch (attempt.status) {
    case AttemptStatus.PREPARING:
      return RolloutStatus.PREPARING;
    case AttemptStatus.RUNNING:
      return RolloutStatus.RUNNING;
    case AttemptStatus.SUCCEEDED:
      return RolloutStatus.SUCCEEDED;
    case AttemptStatus.FAILED:
    case AttemptStatus.TIMEOUT:
    case AttemptStatus.UNRESPONSIVE: {
      const retryable = rollout.config?.retryOn.includes(attempt.status) ?? false;
      return retryable && attempt.sequenceId < maxAttempts(rollout) ? RolloutStatus.REQUEUING : RolloutStatus.FAILED;
    }
    case AttemptStatus.UNSPECIFIED:
      return rollout.status;
  }
}

/**
 * Moves a rollout after its latest attempt changed. Terminal rollouts never
 * move, and only the latest attempt counts: the caller decides currency with
 * isAttemptCurrent, this function re-checks it so no caller can get it wrong.
 */
export function followAttempt(rollout: Rollout, attempt: Attempt, now: Millis): Rollout {
  if (isRolloutTerminal(rollout.status) || rollout.latestAttemptId !== attempt.attemptId) return rollout;
  const status = rolloutStatusFor(rollout, attempt);
  if (status === rollout.status) return rollout;
  const delayMs = status === RolloutStatus.REQUEUING ? retryDelayMs(rollout.config, attempt.sequenceId) : 0;
  return {
    ...rollout,
    status,
    endTime: isRolloutTerminal(status) ? toTimestamp(now) : undefined,
    failureReason: status === RolloutStatus.FAILED ? attemptFailureReason(attempt) : "",
    // The rollout's result is its succeeded attempt's; no other attempt's counts
    // (set only when there is one, like next_attempt_time below).
    ...(status === RolloutStatus.SUCCEEDED && attempt.result !== undefined && { result: attempt.result }),
    // Only set when there is one: an absent field keeps the message's shape (and the hot path fast).
    ...((delayMs > 0 || rollout.nextAttemptTime !== undefined) && {
      nextAttemptTime: delayMs > 0 ? toTimestamp(now + delayMs) : undefined,
    }),
    version: rollout.version + 1n,
  };
}

/** The default of RolloutConfig.retry_backoff_coefficient, as Temporal's. */
export const DEFAULT_RETRY_BACKOFF_COEFFICIENT = 2;

/**
 * Temporal's retry interval: the wait after attempt `failedSequenceId` is
 * retry_delay × coefficient^(failedSequenceId − 1), at most max_retry_delay.
 * 0 when no retry_delay is set.
 */
export function retryDelayMs(config: RolloutConfig | undefined, failedSequenceId: number): Millis {
  const initialMs = msOfDuration(config?.retryDelay) ?? 0;
  if (initialMs <= 0) return 0;
  const coefficient = config?.retryBackoffCoefficient || DEFAULT_RETRY_BACKOFF_COEFFICIENT;
  const delayMs = initialMs * coefficient ** Math.max(0, failedSequenceId - 1);
  const maxMs = msOfDuration(config?.maxRetryDelay);
  return Math.round(maxMs !== undefined && maxMs > 0 ? Math.min(delayMs, maxMs) : delayMs);
}

/** When a queued rollout may next be dispatched (now when it need not wait). */
export function dispatchableAt(rollout: Rollout): Millis | undefined {
  return msOf(rollout.nextAttemptTime);
}

function attemptFailureReason(attempt: Attempt): string {
  const outcome = `attempt ${attempt.sequenceId} ended ${AttemptStatus[attempt.status]}`;
  return attempt.error?.message ? `${outcome}: ${attempt.error.message}` : outcome;
}

/**
 * The rollout-level clocks: `deadline` bounds the whole rollout from its
 * creation, retries included; `queue_timeout` bounds the wait for its first
 * dispatch. Returns why it expired, or undefined.
 */
export function rolloutExpiry(rollout: Rollout, now: Millis): string | undefined {
  if (isRolloutTerminal(rollout.status)) return undefined;
  const createdAt = msOf(rollout.createTime) ?? now;
  const deadlineMs = msOfDuration(rollout.config?.deadline);
  if (deadlineMs !== undefined && deadlineMs > 0 && now - createdAt > deadlineMs) {
    return `deadline of ${deadlineMs} ms exceeded`;
  }
  const queueTimeoutMs = msOfDuration(rollout.config?.queueTimeout);
  if (queueTimeoutMs !== undefined && queueTimeoutMs > 0 && rollout.attemptCount === 0 && now - createdAt > queueTimeoutMs) {
    return `not dispatched within its queue_timeout of ${queueTimeoutMs} ms`;
  }
  return undefined;
}

/**
 * The first moment rolloutExpiry could name a reason (comparisons are strict,
 * hence the + 1), or undefined when it never will.
 */
export function rolloutExpiryDue(rollout: Rollout): Millis | undefined {
  if (isRolloutTerminal(rollout.status)) return undefined;
  const config = rollout.config;
  if (config?.deadline === undefined && config?.queueTimeout === undefined) return undefined;
  const createdAt = msOf(rollout.createTime);
  if (createdAt === undefined) return undefined;
  let due = Infinity;
  const deadlineMs = msOfDuration(config.deadline);
  if (deadlineMs !== undefined && deadlineMs > 0) due = createdAt + deadlineMs + 1;
  const queueTimeoutMs = msOfDuration(config.queueTimeout);
  if (queueTimeoutMs !== undefined && queueTimeoutMs > 0 && rollout.attemptCount === 0) {
    due = Math.min(due, createdAt + queueTimeoutMs + 1);
  }
  return due === Infinity ? undefined : due;
}

export function expireRollout(rollout: Rollout, reason: string, now: Millis): Rollout {
  if (isRolloutTerminal(rollout.status)) {
    throw failedPrecondition(`rollout ${rollout.rolloutId} already finished as ${RolloutStatus[rollout.status]}`);
  }
  return {
    ...rollout,
    status: RolloutStatus.FAILED,
    endTime: toTimestamp(now),
    failureReason: reason,
    version: rollout.version + 1n,
  };
}

export function cancelRollout(rollout: Rollout, now: Millis): Rollout {
  if (isRolloutTerminal(rollout.status)) {
    throw failedPrecondition(
      `rollout ${rollout.rolloutId} already finished as ${RolloutStatus[rollout.status]} and cannot be cancelled`,
    );
  }
  return {
    ...rollout,
    status: RolloutStatus.CANCELLED,
    endTime: toTimestamp(now),
    version: rollout.version + 1n,
  };
}
