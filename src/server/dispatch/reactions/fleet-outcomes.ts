import {
  type FleetComparison,
  failureShare,
  medianWithZeros,
  NO_OUTCOMES,
  type OutcomeTally,
  type WorkerOutcome,
} from "../../domain/quarantine.js";
import type { Millis } from "../../domain/time.js";

/** One slice of the window: the outcomes that ended in it. */
interface Slice {
  start: Millis;
  successes: number;
  failures: number;
  succeededElsewhere: number;
}

/** The window is kept in this many slices: counts, not one entry per attempt, so memory stays flat under load. */
const SLICES = 10;

/** How long the fleet's spread of failure shares is reused before it is taken again (it costs a pass over the fleet). */
const SHARES_REUSE_MS = 100;

/**
 * What the fleet's attempts ended as over the quarantine window, per worker
 * and in total, so that a failing worker is judged against the rest of the
 * fleet (domain/quarantine.ts, outlierEvidence). Also remembers, per rollout
 * that may still be retried, the workers that failed it, so that a success
 * elsewhere counts against them. Process memory only, like the failure
 * streaks: after a restart the window starts empty.
 */
export class FleetOutcomes {
  private readonly sliceMs: Millis;
  private readonly byWorker = new Map<string, Slice[]>();
  private readonly fleet: Slice[] = [];
  /** Per unfinished rollout with a failed attempt, the workers that failed it (and when). */
  private readonly failedOn = new Map<string, Map<string, Millis>>();
  private lastPrune = 0;
  /** When each worker's held-back quarantine was last reported (once per window, not once per failure). */
  private readonly heldBackAt = new Map<string, Millis>();
  /** Per worker, when it was given work that has not ended yet (the first such assignment since its last outcome). */
  private readonly busySince = new Map<string, Millis>();
  /** Each worker's failure share over the window (those with outcomes), ascending, and when it was taken. */
  private shares: { at: Millis; sorted: number[] } | undefined;

  constructor(private readonly windowMs: Millis) {
    this.sliceMs = Math.max(1, Math.ceil(windowMs / SLICES));
  }

  /**
   * An attempt of `rolloutId` on `workerId` ended with `outcome` (neutral
   * outcomes are not recorded); `retried`: the rollout went back to the queue,
   * so a success elsewhere may follow.
   */
  record(workerId: string, rolloutId: string, outcome: WorkerOutcome, retried: boolean, now: Millis) {
    this.busySince.delete(workerId);
    if (outcome === "neutral") return;
    const own = this.slice(this.slicesOf(workerId), now);
    const total = this.slice(this.fleet, now);
    if (outcome === "failure") {
      own.failures++;
      total.failures++;
      if (!retried) return this.pruneNow(now);
      let failed = this.failedOn.get(rolloutId);
      if (failed === undefined) this.failedOn.set(rolloutId, (failed = new Map()));
      failed.set(workerId, now);
    } else {
      own.successes++;
      total.successes++;
      const failed = this.failedOn.get(rolloutId);
      if (failed !== undefined) {
        this.failedOn.delete(rolloutId);
        for (const [other, at] of failed) {
          if (other === workerId || now - at > this.windowMs) continue;
          this.slice(this.slicesOf(other), now).succeededElsewhere++;
          this.slice(this.fleet, now).succeededElsewhere++;
        }
      }
    }
    this.pruneNow(now);
  }

  /**
   * A quarantine of the worker was held back: whether to report it (log and
   * count) — the first time, and then once per window while it lasts.
   */
  reportHeldBack(workerId: string, now: Millis): boolean {
    const last = this.heldBackAt.get(workerId);
    if (last !== undefined && now - last < this.windowMs && now >= last) return false;
    this.heldBackAt.set(workerId, now);
    return true;
  }

  /** The rollout finished: a later success cannot be "elsewhere" for it any more. */
  finished(rolloutId: string) {
    this.failedOn.delete(rolloutId);
  }

  /**
   * The worker's outcomes over the window, against everyone else's; `others`
   * is how many other workers are connected, `idle` how many of them have no
   * outcome in the window but are known not to fail (steadyWithoutOutcomes):
   * they count as failing none for the median; others with no outcome yet
   * are not counted.
   */
  compare(workerId: string, others: number, idle: number, now: Millis): FleetComparison {
    const own = this.tally(this.byWorker.get(workerId), now);
    const all = this.tally(this.fleet, now);
    const sorted = this.sortedShares(now);
    let restShares: readonly number[] = sorted;
    if (own.successes + own.failures > 0) {
      const i = sorted.indexOf(failureShare(own));
      if (i >= 0) restShares = [...sorted.slice(0, i), ...sorted.slice(i + 1)];
    }
    return {
      own,
      rest: {
        successes: all.successes - own.successes,
        failures: all.failures - own.failures,
        succeededElsewhere: all.succeededElsewhere - own.succeededElsewhere,
      },
      restMedianShare: medianWithZeros(restShares, idle),
      comparable: restShares.length + Math.max(0, idle),
      others,
    };
  }

  /** The worker was given an attempt. */
  assigned(workerId: string, now: Millis) {
    if (!this.busySince.has(workerId)) this.busySince.set(workerId, now);
  }

  /**
   * Of `workerIds`, how many have had no attempt end in the window, and
   * either got no work in it (idle) or have been working since before
   * `since` without an end: they are not failing, so they count as failing
   * none when a worker whose failures began at `since` is judged. A worker
   * given work after that, with nothing ended yet, is left out: in a wave
   * that hits every runner, its failures are still on their way.
   */
  steadyWithoutOutcomes(workerIds: Iterable<string>, since: Millis, now: Millis): number {
    let steady = 0;
    for (const id of workerIds) {
      if (this.hasOutcomes(id, now)) continue;
      const busy = this.busySince.get(id);
      if (busy === undefined || busy < since) steady++;
    }
    return steady;
  }

  /** Whether an attempt of the worker ended (success or failure) in the window. */
  hasOutcomes(workerId: string, now: Millis): boolean {
    const tally = this.tally(this.byWorker.get(workerId), now);
    return tally.successes + tally.failures > 0;
  }

  private sortedShares(now: Millis): number[] {
    if (this.shares !== undefined && now >= this.shares.at && now - this.shares.at < SHARES_REUSE_MS) return this.shares.sorted;
    const sorted: number[] = [];
    for (const slices of this.byWorker.values()) {
      const tally = this.tally(slices, now);
      if (tally.successes + tally.failures > 0) sorted.push(failureShare(tally));
    }
    sorted.sort((a, b) => a - b);
    this.shares = { at: now, sorted };
    return sorted;
  }

  private tally(slices: Slice[] | undefined, now: Millis): OutcomeTally {
    if (slices === undefined) return NO_OUTCOMES;
    const since = now - this.windowMs;
    const sum = { successes: 0, failures: 0, succeededElsewhere: 0 };
    for (const slice of slices) {
      if (slice.start + this.sliceMs <= since) continue;
      sum.successes += slice.successes;
      sum.failures += slice.failures;
      sum.succeededElsewhere += slice.succeededElsewhere;
    }
    return sum;
  }

  private slicesOf(workerId: string): Slice[] {
    let slices = this.byWorker.get(workerId);
    if (slices === undefined) this.byWorker.set(workerId, (slices = []));
    return slices;
  }

  /** The slice `now` falls in (the last one, or a new one); slices past the window are dropped. */
  private slice(slices: Slice[], now: Millis): Slice {
    const last = slices[slices.length - 1];
    if (last !== undefined && now < last.start + this.sliceMs && now >= last.start) return last;
    const start = now - (now % this.sliceMs);
    const fresh = { start, successes: 0, failures: 0, succeededElsewhere: 0 };
    slices.push(fresh);
    while (slices.length > 0 && slices[0]!.start + this.sliceMs <= now - this.windowMs) slices.shift();
    return fresh;
  }

  /** Once a window: forgets workers with nothing in it, and failures too old to be vindicated. */
  private pruneNow(now: Millis) {
    if (now - this.lastPrune < this.windowMs) return;
    this.lastPrune = now;
    const since = now - this.windowMs;
    for (const [workerId, slices] of this.byWorker) {
      const last = slices[slices.length - 1];
      if (last === undefined || last.start + this.sliceMs <= since) this.byWorker.delete(workerId);
    }
    for (const [workerId, at] of this.heldBackAt) if (at < since) this.heldBackAt.delete(workerId);
    for (const [workerId, at] of this.busySince) if (at < since && !this.byWorker.has(workerId)) this.busySince.delete(workerId);
    for (const [rolloutId, failed] of this.failedOn) {
      for (const [workerId, at] of failed) if (at < since) failed.delete(workerId);
      if (failed.size === 0) this.failedOn.delete(rolloutId);
    }
  }
}
