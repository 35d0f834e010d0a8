import { describe, expect, it } from "vitest";
import { AttemptErrorKind, AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import {
  applyReport,
  abortAttempt,
  expireAttempt,
  isAttemptCurrent,
  isRepeatedOutcome,
  recordLateReport,
  recordSignOfLife,
  watchdogVerdict,
} from "../../src/server/domain/attempt.js";
import { msOf, toTimestamp } from "../../src/server/domain/time.js";
import { attemptFixture, enumValues, rolloutFixture, T0 } from "../fixtures.js";

const A = AttemptStatus;
const S = RolloutStatus;
const report = (status: AttemptStatus, errorMessage = "") => ({ status, errorMessage });

describe("which attempts are current", () => {
  const cases: [AttemptStatus, RolloutStatus, boolean, boolean][] = [
    // attempt status, rollout status, is latest, current?
    [A.PREPARING, S.PREPARING, true, true],
    [A.RUNNING, S.RUNNING, true, true],
    [A.RUNNING, S.RUNNING, false, false],
    [A.UNRESPONSIVE, S.REQUEUING, true, true],
    [A.UNRESPONSIVE, S.FAILED, true, false],
    [A.UNRESPONSIVE, S.REQUEUING, false, false],
    [A.TIMEOUT, S.REQUEUING, true, false],
    [A.FAILED, S.REQUEUING, true, false],
    [A.SUCCEEDED, S.SUCCEEDED, true, false],
    [A.FAILED, S.CANCELLED, true, false],
    [A.RUNNING, S.CANCELLED, true, false],
  ];
  it.each(cases)("attempt %s, rollout %s, latest=%s → %s", (attemptStatus, rolloutStatus, latest, expected) => {
    const rollout = rolloutFixture({ status: rolloutStatus, latestAttemptId: latest ? "at-1" : "at-2" });
    expect(isAttemptCurrent(attemptFixture({ status: attemptStatus }), rollout)).toBe(expected);
  });
});

describe("reports on a current attempt", () => {
  const active = [A.PREPARING, A.RUNNING, A.UNRESPONSIVE];
  const cases: [AttemptStatus, AttemptStatus, AttemptStatus][] = active.flatMap((from) => [
    [from, A.UNSPECIFIED, A.RUNNING],
    [from, A.RUNNING, A.RUNNING],
    [from, A.SUCCEEDED, A.SUCCEEDED],
    [from, A.FAILED, A.FAILED],
  ]);
  it.each(cases)("%s + report %s → %s", (from, reported, expected) => {
    const attempt = attemptFixture({ status: from, endTime: from === A.UNRESPONSIVE ? toTimestamp(T0) : undefined });
    const after = applyReport(attempt, report(reported, "boom"), T0 + 10);
    expect(AttemptStatus[after.status]).toBe(AttemptStatus[expected]);
    expect(msOf(after.lastHeartbeatTime)).toBe(T0 + 10);
    const terminal = expected === A.SUCCEEDED || expected === A.FAILED;
    expect(after.endTime === undefined).toBe(!terminal);
    expect(after.error?.kind).toBe(expected === A.FAILED ? AttemptErrorKind.REPORTED : undefined);
  });

  it("stamps start_time on the first sign of life only", () => {
    const started = recordSignOfLife(attemptFixture({ status: A.PREPARING }), T0 + 1);
    expect(msOf(started.startTime)).toBe(T0 + 1);
    expect(msOf(recordSignOfLife(started, T0 + 2).startTime)).toBe(T0 + 1);
  });

  it("a heartbeat on a RUNNING attempt refreshes liveness without a version bump", () => {
    const attempt = attemptFixture({ status: A.RUNNING });
    const after = recordSignOfLife(attempt, T0 + 9);
    expect(after.version).toBe(attempt.version);
    expect(msOf(after.lastHeartbeatTime)).toBe(T0 + 9);
  });

  it("revival of an UNRESPONSIVE attempt clears its end_time and error", () => {
    const lost = expireAttempt(attemptFixture(), A.UNRESPONSIVE, "silent", T0 + 5);
    expect(msOf(lost.endTime)).toBe(T0 + 5);
    const revived = recordSignOfLife(lost, T0 + 6);
    expect(revived.status).toBe(A.RUNNING);
    expect(revived.endTime).toBeUndefined();
    expect(revived.error).toBeUndefined();
  });

  it("merges metadata", () => {
    const attempt = attemptFixture({ metadata: { a: 1, b: 2 } });
    const after = applyReport(attempt, { status: A.RUNNING, errorMessage: "", metadata: { b: 3, c: 4 } }, T0);
    expect(after.metadata).toEqual({ a: 1, b: 3, c: 4 });
  });
});

describe("late reports", () => {
  it.each(enumValues<AttemptStatus>(AttemptStatus).filter((s) => s !== A.PREPARING && s !== A.RUNNING))(
    "on a %s attempt keep the status and record the reported outcome",
    (status) => {
      const attempt = attemptFixture({ status });
      const after = recordLateReport(attempt, report(A.SUCCEEDED), T0 + 4);
      expect(after.status).toBe(status);
      expect(after.lateStatus).toBe(A.SUCCEEDED);
      expect(msOf(after.lateReportTime)).toBe(T0 + 4);
    },
  );

  it("a repeated outcome is recognised (resend after reconnect)", () => {
    expect(isRepeatedOutcome(attemptFixture({ status: A.SUCCEEDED }), report(A.SUCCEEDED))).toBe(true);
    expect(isRepeatedOutcome(attemptFixture({ status: A.SUCCEEDED }), report(A.FAILED))).toBe(false);
    expect(isRepeatedOutcome(attemptFixture({ status: A.TIMEOUT, lateStatus: A.FAILED }), report(A.FAILED))).toBe(true);
  });
});

describe("server verdicts", () => {
  it("TIMEOUT and UNRESPONSIVE set end_time and an error of their kind", () => {
    const timedOut = expireAttempt(attemptFixture(), A.TIMEOUT, "too slow", T0 + 3);
    expect(timedOut.error).toMatchObject({ kind: AttemptErrorKind.TIMEOUT, message: "too slow" });
    expect(msOf(timedOut.endTime)).toBe(T0 + 3);
    const cancelled = abortAttempt(attemptFixture(), AttemptErrorKind.CANCELLED, "rollout cancelled", T0 + 4);
    expect(cancelled.status).toBe(A.FAILED);
    expect(cancelled.error?.kind).toBe(AttemptErrorKind.CANCELLED);
  });
});

describe("watchdog verdict (strict comparisons)", () => {
  const started = attemptFixture({ startTime: toTimestamp(T0), lastHeartbeatTime: toTimestamp(T0) });
  const rollout = rolloutFixture({}, { timeoutMs: 100, unresponsiveMs: 50 });
  it.each([
    [T0 + 50, undefined],
    [T0 + 51, A.UNRESPONSIVE],
    [T0 + 100, A.UNRESPONSIVE],
    [T0 + 101, A.TIMEOUT],
  ])("at +%s → %s", (now, expected) => {
    expect(watchdogVerdict(started, rollout, 1_000, now)?.status).toBe(expected);
  });

  it("measures silence from create_time when there was never a sign of life, with the server default", () => {
    const fresh = attemptFixture({ status: A.PREPARING });
    expect(watchdogVerdict(fresh, rolloutFixture(), 1_000, T0 + 1_000)).toBeUndefined();
    expect(watchdogVerdict(fresh, rolloutFixture(), 1_000, T0 + 1_001)?.status).toBe(A.UNRESPONSIVE);
  });

  it("measures the timeout from create_time while the attempt has not started", () => {
    const fresh = attemptFixture({ status: A.PREPARING, lastHeartbeatTime: toTimestamp(T0 + 90) });
    expect(watchdogVerdict(fresh, rolloutFixture({}, { timeoutMs: 100 }), 1_000, T0 + 101)?.status).toBe(A.TIMEOUT);
  });

  it.each([A.SUCCEEDED, A.FAILED, A.TIMEOUT, A.UNRESPONSIVE])("ignores %s attempts", (status) => {
    expect(watchdogVerdict(attemptFixture({ status }), rollout, 1, T0 + 1e9)).toBeUndefined();
  });
});
