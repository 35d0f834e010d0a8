import { create, type JsonObject } from "@bufbuild/protobuf";
import type { Value } from "@bufbuild/protobuf/wkt";
import {
  type Attempt,
  AttemptErrorKind,
  AttemptErrorSchema,
  AttemptSchema,
  AttemptStatus,
} from "../../gen/runnerline/v1/attempt_pb.js";
import { type Rollout, RolloutStatus } from "../../gen/runnerline/v1/rollout_pb.js";
import { isRolloutTerminal } from "./rollout.js";
import { type Millis, msOf, msOfDuration, toTimestamp } from "./time.js";
import { fullShape } from "./full-shape.js";

const ACTIVE = new Set([AttemptStatus.PREPARING, AttemptStatus.RUNNING]);

/** Statuses a runner may report; the others belong to the server. */
export const REPORTABLE_STATUSES: ReadonlySet<AttemptStatus> = new Set([
  AttemptStatus.UNSPECIFIED,
  AttemptStatus.RUNNING,
  AttemptStatus.SUCCEEDED,
  AttemptStatus.FAILED,
]);

/** Attempt outcomes a rollout's retry_on may name. */
export const RETRYABLE_STATUSES: ReadonlySet<AttemptStatus> = new Set([
  AttemptStatus.FAILED,
  AttemptStatus.TIMEOUT,
  AttemptStatus.UNRESPONSIVE,
]);

export const isAttemptActive = (status: AttemptStatus) => ACTIVE.has(status);

/** A runner's report about an attempt: a status (or only a sign of life) and data. */
export interface AttemptReport {
  status: AttemptStatus;
  errorMessage: string;
  metadata?: JsonObject;
  /** What the attempt produced; unset keeps the attempt's previous result. */
  result?: Value;
  /** With an outcome: when the runner says it finished (it may report late, after a reconnect). */
  finishTime?: Millis;
}

export function newAttempt(rollout: Rollout, attemptId: string, workerId: string, now: Millis): Attempt {
  return fullShape(
    AttemptSchema,
    create(AttemptSchema, {
      attemptId,
      rolloutId: rollout.rolloutId,
      sequenceId: rollout.attemptCount + 1,
      workerId,
      status: AttemptStatus.PREPARING,
      createTime: toTimestamp(now),
      version: 1n,
    }),
  );
}

/**
 * Whether reports about this attempt may still move its rollout: it is the
 * rollout's latest attempt, the rollout has not finished, and the attempt is
 * active — or went UNRESPONSIVE while its rollout waits, unclaimed, for a retry
 * (then a sign of life revives it).
 */
export function isAttemptCurrent(attempt: Attempt, rollout: Rollout): boolean {
  if (rollout.latestAttemptId !== attempt.attemptId || isRolloutTerminal(rollout.status)) return false;
  if (isAttemptActive(attempt.status)) return true;
  return attempt.status === AttemptStatus.UNRESPONSIVE && rollout.status === RolloutStatus.REQUEUING;
}

/** Applies a report to a current attempt (see isAttemptCurrent). */
export function applyReport(attempt: Attempt, report: AttemptReport, now: Millis): Attempt {
  const alive: Attempt = {
    ...attempt,
    lastHeartbeatTime: toTimestamp(now),
    metadata: mergeMetadata(attempt.metadata, report.metadata),
    result: report.result ?? attempt.result,
  };
  switch (report.status) {
    case AttemptStatus.SUCCEEDED:
      return finish(alive, AttemptStatus.SUCCEEDED, now, undefined, report.finishTime);
    case AttemptStatus.FAILED:
      return finish(
        alive,
        AttemptStatus.FAILED,
        now,
        { message: report.errorMessage || "the runner reported a failure without a message", kind: AttemptErrorKind.REPORTED },
        report.finishTime,
      );
    default:
      return markAlive(alive, now, report.metadata !== undefined || report.result !== undefined);
  }
}

/** A heartbeat listed the attempt: the same sign of life as an empty report. */
export function recordSignOfLife(attempt: Attempt, now: Millis): Attempt {
  return markAlive({ ...attempt, lastHeartbeatTime: toTimestamp(now) }, now, false);
}

function markAlive(attempt: Attempt, now: Millis, changedData: boolean): Attempt {
  if (attempt.status === AttemptStatus.RUNNING) {
    return changedData ? { ...attempt, version: attempt.version + 1n } : attempt;
  }
  // PREPARING starts; UNRESPONSIVE revives (DESIGN §3: its end is undone).
  return {
    ...attempt,
    status: AttemptStatus.RUNNING,
    startTime: attempt.startTime ?? toTimestamp(now),
    endTime: undefined,
    error: undefined,
    version: attempt.version + 1n,
  };
}

function finish(
  attempt: Attempt,
  status: AttemptStatus,
  now: Millis,
  error: { message: string; kind: AttemptErrorKind } | undefined,
  reportedEnd?: Millis,
): Attempt {
  const endMs = finishMs(attempt, now, reportedEnd);
  return {
    ...attempt,
    status,
    startTime: attempt.startTime ?? toTimestamp(endMs),
    endTime: toTimestamp(endMs),
    error: error === undefined ? undefined : create(AttemptErrorSchema, error),
    version: attempt.version + 1n,
  };
}

/**
 * When a reported outcome happened: the runner's finish_time (a report
 * delivered late still tells when the work ended), clamped to
 * [start_time (create_time if it never started), now]; now when unset.
 */
export function finishMs(attempt: Attempt, now: Millis, reported: Millis | undefined): Millis {
  if (reported === undefined || !Number.isFinite(reported)) return now;
  const earliest = msOf(attempt.startTime) ?? msOf(attempt.createTime) ?? now;
  return Math.min(now, Math.max(earliest, reported));
}

/**
 * A report about an attempt that is no longer current: kept on the attempt for
 * the record, without changing its status (the server's verdict stands). It
 * is a sign of life too. `version` moves only when the outcome or metadata
 * recorded changed, not for the time stamps.
 */
export function recordLateReport(attempt: Attempt, report: AttemptReport, now: Millis): Attempt {
  const reportsOutcome = report.status === AttemptStatus.SUCCEEDED || report.status === AttemptStatus.FAILED;
  const visible = reportsOutcome || report.metadata !== undefined || report.result !== undefined;
  return {
    ...recordLateSignOfLife(attempt, now),
    lateStatus: reportsOutcome ? report.status : attempt.lateStatus,
    lateReportTime: reportsOutcome ? toTimestamp(now) : attempt.lateReportTime,
    metadata: mergeMetadata(attempt.metadata, report.metadata),
    result: report.result ?? attempt.result,
    version: visible ? attempt.version + 1n : attempt.version,
  };
}

/**
 * A heartbeat listed an attempt the server already ended (TIMEOUT,
 * UNRESPONSIVE, cancelled, past its deadline): the runner was still at it.
 * Recorded as its last sign of life — later than end_time — without moving
 * it; like any sign of life it does not change `version`. An attempt the
 * runner itself finished is left as it is.
 */
export function recordLateSignOfLife(attempt: Attempt, now: Millis): Attempt {
  if (!endedByServer(attempt) || (msOf(attempt.lastHeartbeatTime) ?? -Infinity) >= now) return attempt;
  return { ...attempt, lastHeartbeatTime: toTimestamp(now) };
}

/** The server's verdict ended it (not the runner's own outcome): only then is the runner's later activity news. */
function endedByServer(attempt: Attempt): boolean {
  if (attempt.status === AttemptStatus.TIMEOUT || attempt.status === AttemptStatus.UNRESPONSIVE) return true;
  return attempt.status === AttemptStatus.FAILED && attempt.error !== undefined && attempt.error.kind !== AttemptErrorKind.REPORTED;
}

/** A report that repeats the attempt's final outcome (a resend after a reconnect). */
export function isRepeatedOutcome(attempt: Attempt, report: AttemptReport): boolean {
  return (
    (report.status === AttemptStatus.SUCCEEDED || report.status === AttemptStatus.FAILED) &&
    (attempt.status === report.status || attempt.lateStatus === report.status)
  );
}

/** The server ends an attempt: it ran too long, went silent, or was lost. */
export function expireAttempt(
  attempt: Attempt,
  status: AttemptStatus.TIMEOUT | AttemptStatus.UNRESPONSIVE,
  message: string,
  now: Millis,
): Attempt {
  const kind = status === AttemptStatus.TIMEOUT ? AttemptErrorKind.TIMEOUT : AttemptErrorKind.UNRESPONSIVE;
  return finish(attempt, status, now, { message, kind });
}

/**
 * Its rollout ended under it (cancelled, or past its deadline): the attempt
 * fails with an error of that kind.
 */
export function abortAttempt(
  attempt: Attempt,
  kind: AttemptErrorKind.CANCELLED | AttemptErrorKind.DEADLINE_EXCEEDED,
  reason: string,
  now: Millis,
): Attempt {
  return finish(attempt, AttemptStatus.FAILED, now, { message: reason, kind });
}

/**
 * The watchdog's rule for one active attempt: TIMEOUT once it has run longer
 * than config.timeout (from start_time, or from create_time while it has not
 * started); otherwise UNRESPONSIVE once it has shown no sign of life for longer
 * than its unresponsive timeout. Comparisons are strict, as upstream.
 */
export function watchdogVerdict(
  attempt: Attempt,
  rollout: Rollout,
  defaultUnresponsiveMs: Millis,
  now: Millis,
): { status: AttemptStatus.TIMEOUT | AttemptStatus.UNRESPONSIVE; message: string } | undefined {
  if (!isAttemptActive(attempt.status)) return undefined;
  const timeoutMs = msOfDuration(rollout.config?.timeout);
  const startedAt = msOf(attempt.startTime) ?? msOf(attempt.createTime) ?? now;
  if (timeoutMs !== undefined && timeoutMs > 0 && now - startedAt > timeoutMs) {
    return { status: AttemptStatus.TIMEOUT, message: `ran longer than the rollout's timeout of ${timeoutMs} ms` };
  }
  const silenceMs = msOfDuration(rollout.config?.unresponsiveTimeout) || defaultUnresponsiveMs;
  const lastLife = msOf(attempt.lastHeartbeatTime) ?? msOf(attempt.createTime) ?? now;
  if (now - lastLife > silenceMs) {
    return { status: AttemptStatus.UNRESPONSIVE, message: `no sign of life for more than ${silenceMs} ms` };
  }
  return undefined;
}

/**
 * The first moment watchdogVerdict could end this attempt if nothing else
 * happens (comparisons are strict, hence the + 1); undefined for an attempt
 * that is not active. A later sign of life only moves the real moment later,
 * so a timer set for this time may fire early, never late: it then asks again.
 */
export function watchdogDue(attempt: Attempt, rollout: Rollout, defaultUnresponsiveMs: Millis): Millis | undefined {
  if (!isAttemptActive(attempt.status)) return undefined;
  const created = msOf(attempt.createTime) ?? 0;
  const silenceMs = msOfDuration(rollout.config?.unresponsiveTimeout) || defaultUnresponsiveMs;
  let due = (msOf(attempt.lastHeartbeatTime) ?? created) + silenceMs + 1;
  const timeoutMs = msOfDuration(rollout.config?.timeout);
  if (timeoutMs !== undefined && timeoutMs > 0) {
    due = Math.min(due, (msOf(attempt.startTime) ?? created) + timeoutMs + 1);
  }
  return due;
}

function mergeMetadata(current: JsonObject | undefined, update: JsonObject | undefined): JsonObject | undefined {
  if (update === undefined) return current;
  return { ...(current ?? {}), ...update };
}
