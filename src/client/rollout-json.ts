// The plain-JSON shapes of the training-loop API (rollout-client.ts) and their pure conversions to and from the
// protobuf messages: what a training loop writes (RolloutSpec) and what it reads back (RolloutOutcome).
import { create, fromJson, toJson } from "@bufbuild/protobuf";
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { timestampDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import { AttemptStatus } from "../gen/runnerline/v1/attempt_pb.js";
import {
  type EnqueueRolloutRequest,
  EnqueueRolloutRequestSchema,
  type Rollout,
  RolloutMode,
  RolloutStatus,
} from "../gen/runnerline/v1/rollout_pb.js";
import { type DurationInput, toDuration } from "./duration.js";

/** How an attempt ended, as `retryOn` names it. */
export type AttemptOutcomeName = "FAILED" | "TIMEOUT" | "UNRESPONSIVE";
/** A rollout's status without the ROLLOUT_STATUS_ prefix. */
export type RolloutStatusName = "QUEUING" | "PREPARING" | "RUNNING" | "SUCCEEDED" | "FAILED" | "CANCELLED" | "REQUEUING";
/** The statuses a rollout ends in. */
export type FinishedStatusName = "SUCCEEDED" | "FAILED" | "CANCELLED";

/** Retry and time limits of one rollout (RolloutConfig in proto/runnerline/v1/rollout.proto); all optional. */
export interface RolloutSpecConfig {
  /** Longest one attempt may run. */
  timeout?: DurationInput;
  /** Longest an attempt may go without a sign of life from its runner. */
  unresponsiveTimeout?: DurationInput;
  /** Attempts in all, the first included (default 1: no retry). */
  maxAttempts?: number;
  /** Which attempt outcomes are retried (default: none). */
  retryOn?: AttemptOutcomeName[];
  /** Longest the whole rollout may take from its enqueue. */
  deadline?: DurationInput;
  /** Longest it may wait in the queue for a runner. */
  queueTimeout?: DurationInput;
  /** Only runners with all these labels take it. */
  requiredLabels?: Record<string, string>;
  /** Wait before the first retry, multiplied by retryBackoffCoefficient for each further one, up to maxRetryDelay. */
  retryDelay?: DurationInput;
  retryBackoffCoefficient?: number;
  maxRetryDelay?: DurationInput;
}

/** One rollout to enqueue, as plain JSON. */
export interface RolloutSpec {
  /** What the runner's handler gets as job.input (any JSON value). */
  input?: JsonValue;
  /** Idempotency key: enqueueing the same id and content again returns the first rollout. Default: a random UUID. */
  rolloutId?: string;
  mode?: "train" | "val" | "test";
  resourcesId?: string;
  metadata?: JsonObject;
  /** Higher goes first (default 0). */
  priority?: number;
  config?: RolloutSpecConfig;
}

/** A rollout as the training loop reads it back: plain values, no protobuf types. */
export interface RolloutOutcome {
  rolloutId: string;
  status: RolloutStatusName;
  /** True when status is SUCCEEDED. */
  succeeded: boolean;
  /** What the runner's handler returned (undefined when it returned nothing, or the rollout did not succeed). */
  result: JsonValue | undefined;
  input: JsonValue | undefined;
  /** Why it failed or was cancelled ("" otherwise). */
  failureReason: string;
  attemptCount: number;
  latestAttemptId: string;
  metadata: JsonObject;
  priority: number;
  createTime: Date | undefined;
  startTime: Date | undefined;
  endTime: Date | undefined;
}

const MODES = { train: RolloutMode.TRAIN, val: RolloutMode.VAL, test: RolloutMode.TEST } as const;
const RETRY_ON: Record<AttemptOutcomeName, AttemptStatus> = {
  FAILED: AttemptStatus.FAILED,
  TIMEOUT: AttemptStatus.TIMEOUT,
  UNRESPONSIVE: AttemptStatus.UNRESPONSIVE,
};

/**
 * The EnqueueRolloutRequest for `spec`. Refuses, before anything is sent, what cannot be a request: a duration that is
 * not one (InvalidDurationError), an unknown mode or retryOn name (TypeError). The server checks the rest (ids,
 * bounds) and answers INVALID_ARGUMENT.
 */
export function enqueueRequest(spec: RolloutSpec, field: string, defaultId: () => string): EnqueueRolloutRequest {
  if (spec === null || typeof spec !== "object") throw new TypeError(`${field} must be an object, got ${JSON.stringify(spec)}`);
  const mode = spec.mode === undefined ? RolloutMode.UNSPECIFIED : MODES[spec.mode];
  if (mode === undefined) throw new TypeError(`${field}.mode must be "train", "val" or "test", got ${JSON.stringify(spec.mode)}`);
  const config = spec.config ?? {};
  const retryOn = (config.retryOn ?? []).map((name, i) => {
    const status = RETRY_ON[name];
    if (status === undefined) {
      throw new TypeError(`${field}.config.retryOn[${i}] must be "FAILED", "TIMEOUT" or "UNRESPONSIVE", got ${JSON.stringify(name)}`);
    }
    return status;
  });
  const at = (name: string) => `${field}.config.${name}`;
  return create(EnqueueRolloutRequestSchema, {
    rolloutId: spec.rolloutId ?? defaultId(),
    ...(spec.input !== undefined && { input: fromJson(ValueSchema, spec.input) }),
    mode,
    resourcesId: spec.resourcesId ?? "",
    ...(spec.metadata !== undefined && { metadata: spec.metadata }),
    priority: spec.priority ?? 0,
    ...(spec.config !== undefined && {
      config: {
        timeout: toDuration(at("timeout"), config.timeout),
        unresponsiveTimeout: toDuration(at("unresponsiveTimeout"), config.unresponsiveTimeout),
        maxAttempts: config.maxAttempts ?? 0,
        retryOn,
        deadline: toDuration(at("deadline"), config.deadline),
        queueTimeout: toDuration(at("queueTimeout"), config.queueTimeout),
        requiredLabels: config.requiredLabels ?? {},
        retryDelay: toDuration(at("retryDelay"), config.retryDelay),
        retryBackoffCoefficient: config.retryBackoffCoefficient ?? 0,
        maxRetryDelay: toDuration(at("maxRetryDelay"), config.maxRetryDelay),
      },
    }),
  });
}

/** The plain view of a rollout message. */
export function rolloutOutcome(rollout: Rollout): RolloutOutcome {
  const status = (RolloutStatus[rollout.status] ?? "UNSPECIFIED") as RolloutStatusName;
  const time = (t: Rollout["createTime"]) => (t === undefined ? undefined : timestampDate(t));
  return {
    rolloutId: rollout.rolloutId,
    status,
    succeeded: rollout.status === RolloutStatus.SUCCEEDED,
    result: rollout.result === undefined ? undefined : toJson(ValueSchema, rollout.result),
    input: rollout.input === undefined ? undefined : toJson(ValueSchema, rollout.input),
    failureReason: rollout.failureReason,
    attemptCount: rollout.attemptCount,
    latestAttemptId: rollout.latestAttemptId,
    metadata: rollout.metadata ?? {},
    priority: rollout.priority,
    createTime: time(rollout.createTime),
    startTime: time(rollout.startTime),
    endTime: time(rollout.endTime),
  };
}
