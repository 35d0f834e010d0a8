import { describe, expect, it } from "vitest";
import { FleetOutcomes } from "../../src/server/dispatch/reactions/fleet-outcomes.js";
import {
  DEFAULT_QUARANTINE_POLICY,
  type FleetComparison,
  medianWithZeros,
  NO_OUTCOMES,
  outlierEvidence,
  quarantineDecision,
  quarantineRoom,
} from "../../src/server/domain/quarantine.js";
import { newWorkerRecord } from "../../src/server/domain/worker.js";
import { T0 } from "../fixtures.js";

// Issue 18 §1: a runner is judged against the rest of the fleet over the same window, and never more than a
// bounded share of the connected fleet is quarantined.
const tally = (successes: number, failures: number, succeededElsewhere = 0) => ({ successes, failures, succeededElsewhere });

describe("a failing worker against the rest of the fleet", () => {
  const against = (own: ReturnType<typeof tally>, restMedianShare: number, others = 3, rest = NO_OUTCOMES, comparable = others): FleetComparison => ({
    own,
    rest,
    restMedianShare,
    comparable,
    others,
  });

  it("is an outlier when it fails clearly more than the typical other worker", () => {
    expect(outlierEvidence(against(tally(0, 3), 0))).toMatch(/failed 100 % .*the typical other worker 0 %/);
    expect(outlierEvidence(against(tally(1, 3), 0.25))).toBeDefined(); // 75 % against 25 %
  });

  it("is not one in a wave that hits the whole fleet, nor alone, nor when it fails a little more than the rest", () => {
    expect(outlierEvidence(against(tally(0, 3), 1, 29))).toBeUndefined();
    expect(outlierEvidence(against(tally(0, 3), 0.55, 29))).toBeUndefined();
    expect(outlierEvidence(against(tally(0, 3), 0, 0))).toBeUndefined();
    expect(outlierEvidence(against(tally(0, 0), 0))).toBeUndefined();
    // Others connected, but none with an outcome yet and none idle (a wave's first failures): nobody to compare with.
    expect(outlierEvidence(against(tally(0, 3), 0, 29, NO_OUTCOMES, 0))).toBeUndefined();
  });

  it("is one when the rollouts it failed then succeeded elsewhere, while the rest's failures did not", () => {
    // Hard work fails often everywhere (60 %), but what this runner failed others then finished.
    expect(outlierEvidence(against(tally(0, 4, 3), 0.6, 9, tally(40, 60, 6)))).toMatch(
      /3 of the 4 rollouts it failed in the window then succeeded elsewhere/,
    );
    // In a wave every runner's failures succeed elsewhere on retry: nobody stands out.
    expect(outlierEvidence(against(tally(2, 4, 4), 0.55, 9, tally(50, 60, 55)))).toBeUndefined();
  });

  it("the typical other worker is the median, counting connected workers with nothing ended as failing none", () => {
    expect(medianWithZeros([], 0)).toBe(0);
    expect(medianWithZeros([1], 3)).toBe(0); // one other black hole among three quiet workers
    expect(medianWithZeros([1, 1, 1], 1)).toBe(1);
    expect(medianWithZeros([0.5, 1], 0)).toBe(0.75);
    expect(medianWithZeros([0.2, 0.4, 1], -2)).toBe(0.4);
  });

  it("quarantineDecision needs both the streak and the fleet's evidence", () => {
    const worker = newWorkerRecord("w-1", T0).worker;
    const streak = [T0, T0 + 1, T0 + 2];
    const wave = against(tally(0, 3), 1, 20);
    expect(quarantineDecision(worker, streak, DEFAULT_QUARANTINE_POLICY, T0 + 2, "x", wave)).toBeUndefined();
    const alone = against(tally(0, 3), 0, 20);
    expect(quarantineDecision(worker, streak, DEFAULT_QUARANTINE_POLICY, T0 + 2, "x", alone)).toMatchObject({ count: 1 });
    const off = { ...DEFAULT_QUARANTINE_POLICY, maxPercent: 0 };
    expect(quarantineDecision(worker, streak, off, T0 + 2, "x", alone)).toBeUndefined();
  });

  it("quarantineDecision compares with the fleet only when the streak alone would quarantine", () => {
    const worker = newWorkerRecord("w-1", T0).worker;
    const notAsked = () => {
      throw new Error("the fleet was compared for a streak too short to quarantine");
    };
    expect(quarantineDecision(worker, [T0, T0 + 1], DEFAULT_QUARANTINE_POLICY, T0 + 1, "x", notAsked)).toBeUndefined();
    let asked = 0;
    const alone = () => (asked++, against(tally(0, 3), 0, 20));
    expect(quarantineDecision(worker, [T0, T0 + 1, T0 + 2], DEFAULT_QUARANTINE_POLICY, T0 + 2, "x", alone)).toMatchObject({ count: 1 });
    expect(asked).toBe(1);
  });
});

describe("the share of the fleet that may be quarantined (max_ejection_percent)", () => {
  it("is 10 % of the connected fleet by default, rounded down, but at least one worker", () => {
    expect(DEFAULT_QUARANTINE_POLICY.maxPercent).toBe(10);
    expect(quarantineRoom(4, 0, 10)).toBe(true);
    expect(quarantineRoom(4, 1, 10)).toBe(false);
    expect(quarantineRoom(30, 2, 10)).toBe(true);
    expect(quarantineRoom(30, 3, 10)).toBe(false);
    expect(quarantineRoom(200, 19, 10)).toBe(true);
    expect(quarantineRoom(200, 20, 10)).toBe(false);
    expect(quarantineRoom(10, 9, 100)).toBe(true);
    expect(quarantineRoom(10, 0, 0)).toBe(false);
  });
});

describe("FleetOutcomes", () => {
  const windowMs = 60_000;

  it("tallies each worker against the rest over the window, and forgets what is older", () => {
    const outcomes = new FleetOutcomes(windowMs);
    outcomes.record("bad", "ro-1", "failure", true, T0);
    outcomes.record("bad", "ro-2", "failure", true, T0 + 10);
    outcomes.record("good", "ro-3", "success", false, T0 + 20);
    outcomes.record("good", "ro-4", "neutral", false, T0 + 30);
    expect(outcomes.compare("bad", 1, 0, T0 + 40)).toEqual({ own: tally(0, 2), rest: tally(1, 0), restMedianShare: 0, comparable: 1, others: 1 });
    expect(outcomes.compare("good", 1, 0, T0 + 40)).toEqual({ own: tally(1, 0), rest: tally(0, 2), restMedianShare: 1, comparable: 1, others: 1 });
    // Three others connected: "bad" (100 %), "good" (0 %) and one idle with nothing ended (0 %).
    expect(outcomes.compare("nobody", 3, 1, T0 + 40)).toEqual({ own: NO_OUTCOMES, rest: tally(1, 2), restMedianShare: 0, comparable: 3, others: 3 });
    // The third is busy with nothing ended yet: not counted, so the median is of "bad" and "good".
    expect(outcomes.compare("nobody", 3, 0, T0 + 40)).toMatchObject({ restMedianShare: 0.5, comparable: 2 });
    expect(outcomes.hasOutcomes("good", T0 + 40)).toBe(true);
    expect(outcomes.hasOutcomes("nobody", T0 + 40)).toBe(false);
    const later = T0 + windowMs + 10_000;
    expect(outcomes.compare("bad", 1, 0, later)).toEqual({ own: NO_OUTCOMES, rest: NO_OUTCOMES, restMedianShare: 0, comparable: 0, others: 1 });
  });

  it("counts as steady, for the median, a worker idle or working since before the failures began, not one given work since", () => {
    const outcomes = new FleetOutcomes(windowMs);
    outcomes.assigned("long-task", T0); // working since before the streak, nothing ended: not failing
    outcomes.assigned("wave-peer", T0 + 20); // given work after the streak began: its outcome is on its way
    outcomes.record("ended", "ro-1", "failure", true, T0 + 5);
    outcomes.assigned("ended", T0 + 6);
    expect(outcomes.steadyWithoutOutcomes(["long-task", "wave-peer", "idle", "ended"], T0 + 10, T0 + 30)).toBe(2);
    // Once its attempt ends, a worker is judged by its share, not counted as steady.
    outcomes.record("long-task", "ro-2", "success", false, T0 + 40);
    expect(outcomes.steadyWithoutOutcomes(["long-task", "idle"], T0 + 10, T0 + 50)).toBe(1);
  });

  it("counts a retried rollout that succeeds on another worker against the one that failed it", () => {
    const outcomes = new FleetOutcomes(windowMs);
    outcomes.record("bad", "ro-1", "failure", true, T0);
    outcomes.record("bad", "ro-2", "failure", false, T0); // not retried: nothing can vindicate it
    outcomes.record("good", "ro-1", "success", false, T0 + 5);
    outcomes.record("good", "ro-2", "success", false, T0 + 5);
    expect(outcomes.compare("bad", 1, 0, T0 + 10).own).toEqual(tally(0, 2, 1));
    // Its own success on a rollout it failed before is no evidence against it; nor is a finished rollout.
    outcomes.record("bad", "ro-5", "failure", true, T0 + 20);
    outcomes.record("bad", "ro-5", "success", false, T0 + 30);
    outcomes.record("bad", "ro-6", "failure", true, T0 + 40);
    outcomes.finished("ro-6");
    outcomes.record("good", "ro-6", "success", false, T0 + 50);
    expect(outcomes.compare("bad", 1, 0, T0 + 60).own).toEqual(tally(1, 4, 1));
  });

  it("reports a held-back quarantine of a worker once per window, not once per failure", () => {
    const outcomes = new FleetOutcomes(windowMs);
    expect(outcomes.reportHeldBack("w-1", T0)).toBe(true);
    expect(outcomes.reportHeldBack("w-1", T0 + 1_000)).toBe(false);
    expect(outcomes.reportHeldBack("w-2", T0 + 1_000)).toBe(true);
    expect(outcomes.reportHeldBack("w-1", T0 + windowMs)).toBe(true);
  });
});
