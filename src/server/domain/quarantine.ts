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
  /**
   * At most this share (percent) of the connected fleet is quarantined at
   * once (Envoy's max_ejection_percent), but never fewer than one worker; 0
   * turns quarantine off.
   */
  maxPercent: number;
}

export const DEFAULT_QUARANTINE_POLICY: QuarantinePolicy = {
  failures: 3,
  windowMs: 60_000,
  backoffMs: 30_000,
  maxBackoffMs: 600_000,
  maxPercent: 10,
};

/**
 * How much more often than the rest of the fleet a worker must fail, over the
 * same window, to be an outlier: its share of failed attempts at least this
 * much above theirs (Envoy's success-rate outlier detection compares each
 * host with its cluster the same way). A wave of failures that hits every
 * runner (a model server down, a bad batch of tasks) is the work's fault and
 * quarantines nobody.
 */
export const OUTLIER_MARGIN = 0.5;

/** A worker's (or the rest of the fleet's) attempts that ended over the window. */
export interface OutcomeTally {
  successes: number;
  failures: number;
  /** Of the failures, rollouts that then succeeded on another worker. */
  succeededElsewhere: number;
}

export const NO_OUTCOMES: OutcomeTally = { successes: 0, failures: 0, succeededElsewhere: 0 };

/** What the worker's failures are compared with. */
export interface FleetComparison {
  /** The worker's own attempts over the window. */
  own: OutcomeTally;
  /** Every other worker's attempts over the same window, pooled. */
  rest: OutcomeTally;
  /**
   * The typical other worker's share of failed attempts over the window: the
   * median over the other workers whose attempts ended in the window and the
   * steady ones (idle, or working since before this worker's failures began,
   * with nothing ended: they count as failing none, so that a few failing
   * runners do not hide each other). A worker given work since, with nothing
   * ended yet, is not counted: in a wave that hits every runner, its
   * failures are still on their way.
   */
  restMedianShare: number;
  /** How many other workers that median is over; 0: nobody to compare the worker's share with yet. */
  comparable: number;
  /** Other workers connected now: without any, there is nobody to compare with, and no better place for work. */
  others: number;
}

/**
 * Why the worker fails clearly more than the rest of the fleet, or undefined
 * when it does not: its share of failures is OUTLIER_MARGIN above the typical
 * other worker's, or the share of its failed rollouts that then succeeded
 * elsewhere is that much above the rest's (the work was fine; this runner
 * was not).
 */
export function outlierEvidence(comparison: FleetComparison): string | undefined {
  const { own, rest, restMedianShare, others, comparable } = comparison;
  if (others <= 0 || own.failures === 0) return undefined;
  const ownShare = share(own.failures, own.successes + own.failures);
  if (comparable > 0 && ownShare - restMedianShare >= OUTLIER_MARGIN) {
    return `it failed ${percent(ownShare)} of its attempts in the window, the typical other worker ${percent(restMedianShare)}`;
  }
  const ownElsewhere = share(own.succeededElsewhere, own.failures);
  const restElsewhere = share(rest.succeededElsewhere, rest.failures);
  if (own.succeededElsewhere > 0 && ownElsewhere - restElsewhere >= OUTLIER_MARGIN) {
    return (
      `${own.succeededElsewhere} of the ${own.failures} rollouts it failed in the window then succeeded elsewhere ` +
      `(${percent(ownElsewhere)}; for the rest of the fleet ${percent(restElsewhere)})`
    );
  }
  return undefined;
}

/** The median of `sorted` (ascending) with `zeros` zeros before it; 0 when both are empty. */
export function medianWithZeros(sorted: readonly number[], zerosAsked: number): number {
  const zeros = Math.max(0, zerosAsked);
  const n = sorted.length + zeros;
  if (n === 0) return 0;
  const at = (i: number) => (i < zeros ? 0 : sorted[i - zeros]!);
  return n % 2 === 1 ? at((n - 1) / 2) : (at(n / 2 - 1) + at(n / 2)) / 2;
}

export const failureShare = (tally: OutcomeTally) => share(tally.failures, tally.successes + tally.failures);

/**
 * Whether one more worker may be quarantined: at most maxPercent of the
 * connected fleet (rounded down, but at least one) at once. Beyond it the
 * quarantine is held back: so many failing runners say more about the work
 * than about them.
 */
export function quarantineRoom(connected: number, quarantinedConnected: number, maxPercent: number): boolean {
  if (maxPercent <= 0) return false;
  const allowed = Math.max(1, Math.floor((connected * maxPercent) / 100));
  return quarantinedConnected < allowed;
}

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
 * Either way only an outlier of the fleet (outlierEvidence) is quarantined.
 * Whether there is room for one more (quarantineRoom) is the caller's to ask.
 */
export function quarantineDecision(
  worker: Worker,
  streak: readonly Millis[],
  policy: QuarantinePolicy,
  now: Millis,
  lastFailure: string,
  /** The fleet to judge against; a function is called only when the streak alone would quarantine (it costs a pass). */
  fleet: FleetComparison | (() => FleetComparison),
): QuarantineDecision | undefined {
  if (isQuarantined(worker, now) || policy.maxPercent <= 0) return undefined;
  const onProbation = worker.quarantineCount > 0;
  const needed = onProbation ? 1 : Math.max(1, policy.failures);
  if (streak.length < needed) return undefined;
  const first = streak[streak.length - needed]!;
  if (now - first > policy.windowMs) return undefined;
  const evidence = outlierEvidence(typeof fleet === "function" ? fleet() : fleet);
  if (evidence === undefined) return undefined;
  const count = worker.quarantineCount + 1;
  const backoffMs = Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** (count - 1));
  const why = onProbation
    ? `an attempt failed again after its previous quarantine (quarantine ${count} in a row)`
    : `its last ${needed} attempts all ended FAILED or TIMEOUT within ${seconds(now - first)} s`;
  return { until: now + backoffMs, reason: `${why}, and ${evidence}; last: ${lastFailure}`, count };
}

/** A success after the quarantine period ends the quarantine and the probation. */
export function successClearsQuarantine(worker: Worker, outcome: WorkerOutcome, now: Millis): boolean {
  if (outcome !== "success" || isQuarantined(worker, now)) return false;
  return worker.quarantineUntil !== undefined || worker.quarantineCount > 0;
}

const seconds = (ms: Millis) => (ms / 1000).toFixed(1);
const share = (part: number, whole: number) => (whole === 0 ? 0 : part / whole);
const percent = (fraction: number) => `${Math.round(fraction * 100)} %`;
