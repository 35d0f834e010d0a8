import { type Attempt, AttemptErrorKind, AttemptStatus } from "../../gen/runnerline/v1/attempt_pb.js";
import type { Worker } from "../../gen/runnerline/v1/worker_pb.js";
import type { Millis } from "./time.js";
import { isQuarantined } from "./worker.js";

/**
 * When a worker stops getting work because its attempts keep failing (a
 * "black-hole" runner that fails everything in milliseconds and asks for more).
 */
export interface QuarantinePolicy {
  /** This many attempts in a row ending FAILED or TIMEOUT quarantine the worker... */
  failures: number;
  /** ...when they all ended within this time. */
  windowMs: Millis;
  /** The first quarantine lasts this long; each one in a row after it twice as long as the one before... */
  backoffMs: Millis;
  /** ...but never longer than this. */
  maxBackoffMs: Millis;
}

export const DEFAULT_QUARANTINE_POLICY: QuarantinePolicy = {
  failures: 3,
  windowMs: 60_000,
  backoffMs: 30_000,
  maxBackoffMs: 600_000,
};

/** What an ended attempt says about its worker's health. */
export type WorkerOutcome = "success" | "failure" | "neutral";

/**
 * SUCCEEDED speaks for the worker; FAILED (as reported by the runner) and
 * TIMEOUT against it. UNRESPONSIVE says more about the network than about the
 * worker's ability to run work, and a cancel or an expired deadline nothing.
 */
export function workerOutcome(attempt: Attempt): WorkerOutcome {
  switch (attempt.status) {
    case AttemptStatus.SUCCEEDED:
      return "success";
    case AttemptStatus.TIMEOUT:
      return "failure";
    case AttemptStatus.FAILED:
      return attempt.error?.kind === AttemptErrorKind.REPORTED ? "failure" : "neutral";
    default:
      return "neutral";
  }
}

/** The end times of the worker's latest failures in a row (oldest first, at most `failures` of them). */
export function nextFailureStreak(
  streak: readonly Millis[],
  outcome: WorkerOutcome,
  endedAt: Millis,
  policy: QuarantinePolicy,
): Millis[] {
  if (outcome === "success") return [];
  if (outcome === "neutral") return [...streak];
  return [...streak, endedAt].slice(-Math.max(1, policy.failures));
}

export interface QuarantineDecision {
  until: Millis;
  reason: string;
  /** Quarantines in a row, this one included. */
  count: number;
}

/**
 * Whether the failure streak quarantines the worker now. A worker coming out
 * of a quarantine is on probation until its next success: one more failure
 * sends it back, for twice as long as the last time (at most maxBackoffMs).
 */
export function quarantineDecision(
  worker: Worker,
  streak: readonly Millis[],
  policy: QuarantinePolicy,
  now: Millis,
  lastFailure: string,
): QuarantineDecision | undefined {
  if (isQuarantined(worker, now)) return undefined;
  const onProbation = worker.quarantineCount > 0;
  const needed = onProbation ? 1 : Math.max(1, policy.failures);
  if (streak.length < needed) return undefined;
  const first = streak[streak.length - needed]!;
  if (now - first > policy.windowMs) return undefined;
  const count = worker.quarantineCount + 1;
  const backoffMs = Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** (count - 1));
  const why = onProbation
    ? `an attempt failed again after its previous quarantine (quarantine ${count} in a row)`
    : `its last ${needed} attempts all ended FAILED or TIMEOUT within ${seconds(now - first)} s`;
  return { until: now + backoffMs, reason: `${why}; last: ${lastFailure}`, count };
}

/** A success after the quarantine period ends the quarantine and the probation. */
export function successClearsQuarantine(worker: Worker, outcome: WorkerOutcome, now: Millis): boolean {
  if (outcome !== "success" || isQuarantined(worker, now)) return false;
  return worker.quarantineUntil !== undefined || worker.quarantineCount > 0;
}

const seconds = (ms: Millis) => (ms / 1000).toFixed(1);
