import { describe, expect, it } from "vitest";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { DomainError } from "../../src/server/domain/errors.js";
import {
  cancelRollout,
  dispatchRollout,
  followAttempt,
  isRolloutTerminal,
  rolloutEffects,
  rolloutStatusFor,
} from "../../src/server/domain/rollout.js";
import { msOf } from "../../src/server/domain/time.js";
import { attemptFixture, enumValues, rolloutFixture, T0 } from "../fixtures.js";

const S = RolloutStatus;
const A = AttemptStatus;
const allRolloutStatuses = enumValues<RolloutStatus>(RolloutStatus);
const allAttemptStatuses = enumValues<AttemptStatus>(AttemptStatus);
const terminal = [S.SUCCEEDED, S.FAILED, S.CANCELLED];

describe("rollout status follows its latest attempt (DESIGN §3)", () => {
  const cases: [AttemptStatus, { maxAttempts: number; retryOn: AttemptStatus[]; sequenceId: number }, RolloutStatus][] = [
    [A.PREPARING, { maxAttempts: 1, retryOn: [], sequenceId: 1 }, S.PREPARING],
    [A.RUNNING, { maxAttempts: 1, retryOn: [], sequenceId: 1 }, S.RUNNING],
    [A.SUCCEEDED, { maxAttempts: 3, retryOn: [A.FAILED], sequenceId: 1 }, S.SUCCEEDED],
    // retry only when the status is in retry_on AND sequence_id < max_attempts
    [A.FAILED, { maxAttempts: 2, retryOn: [A.FAILED], sequenceId: 1 }, S.REQUEUING],
    [A.FAILED, { maxAttempts: 2, retryOn: [A.FAILED], sequenceId: 2 }, S.FAILED],
    [A.FAILED, { maxAttempts: 2, retryOn: [A.TIMEOUT], sequenceId: 1 }, S.FAILED],
    [A.FAILED, { maxAttempts: 1, retryOn: [A.FAILED], sequenceId: 1 }, S.FAILED],
    [A.FAILED, { maxAttempts: 0, retryOn: [A.FAILED], sequenceId: 1 }, S.FAILED],
    [A.TIMEOUT, { maxAttempts: 2, retryOn: [A.TIMEOUT], sequenceId: 1 }, S.REQUEUING],
    [A.TIMEOUT, { maxAttempts: 2, retryOn: [], sequenceId: 1 }, S.FAILED],
    [A.UNRESPONSIVE, { maxAttempts: 3, retryOn: [A.UNRESPONSIVE], sequenceId: 2 }, S.REQUEUING],
    [A.UNRESPONSIVE, { maxAttempts: 3, retryOn: [A.UNRESPONSIVE], sequenceId: 3 }, S.FAILED],
    [A.UNRESPONSIVE, { maxAttempts: 3, retryOn: [A.FAILED, A.TIMEOUT], sequenceId: 1 }, S.FAILED],
  ];
  it.each(cases)("attempt %s with %o → rollout %s", (attemptStatus, policy, expected) => {
    const rollout = rolloutFixture({}, policy);
    const attempt = attemptFixture({ status: attemptStatus, sequenceId: policy.sequenceId });
    expect(RolloutStatus[rolloutStatusFor(rollout, attempt)]).toBe(RolloutStatus[expected]);
  });

  it("sets end_time when the rollout becomes terminal, not when it requeues", () => {
    const rollout = rolloutFixture({}, { maxAttempts: 2, retryOn: [A.FAILED] });
    const requeued = followAttempt(rollout, attemptFixture({ status: A.FAILED }), T0 + 5);
    expect(requeued.status).toBe(S.REQUEUING);
    expect(requeued.endTime).toBeUndefined();
    const failed = followAttempt(rollout, attemptFixture({ status: A.FAILED, sequenceId: 2 }), T0 + 7);
    expect(failed.status).toBe(S.FAILED);
    expect(msOf(failed.endTime)).toBe(T0 + 7);
    expect(failed.version).toBe(rollout.version + 1n);
  });
});

describe("terminal rollouts never change", () => {
  const cases = terminal.flatMap((rolloutStatus) => allAttemptStatuses.map((a) => [rolloutStatus, a] as const));
  it.each(cases)("rollout %s ignores latest attempt %s", (rolloutStatus, attemptStatus) => {
    const rollout = rolloutFixture({ status: rolloutStatus }, { maxAttempts: 5, retryOn: [A.FAILED] });
    expect(followAttempt(rollout, attemptFixture({ status: attemptStatus }), T0)).toBe(rollout);
  });

  it.each(terminal)("cancelling a %s rollout is FAILED_PRECONDITION", (status) => {
    const error = catchError(() => cancelRollout(rolloutFixture({ status }), T0));
    expect(error).toBeInstanceOf(DomainError);
    expect((error as DomainError).kind).toBe("failed_precondition");
  });
});

describe("updates to a non-latest attempt never move the rollout", () => {
  it.each(allAttemptStatuses)("older attempt %s", (status) => {
    const rollout = rolloutFixture({ latestAttemptId: "at-2", attemptCount: 2 });
    expect(followAttempt(rollout, attemptFixture({ attemptId: "at-1", status }), T0)).toBe(rollout);
  });
});

describe("cancel", () => {
  it.each(allRolloutStatuses.filter((s) => !isRolloutTerminal(s)))("%s → CANCELLED with end_time", (status) => {
    const cancelled = cancelRollout(rolloutFixture({ status }), T0 + 1);
    expect(cancelled.status).toBe(S.CANCELLED);
    expect(msOf(cancelled.endTime)).toBe(T0 + 1);
  });
});

describe("dispatch", () => {
  it.each([S.QUEUING, S.REQUEUING])("%s → PREPARING with the new attempt", (status) => {
    const rollout = rolloutFixture({ status, attemptCount: 1, latestAttemptId: "at-1", startTime: undefined });
    const attempt = attemptFixture({ attemptId: "at-2", sequenceId: 2, status: A.PREPARING });
    const dispatched = dispatchRollout(rollout, attempt, T0 + 3);
    expect(dispatched).toMatchObject({ status: S.PREPARING, attemptCount: 2, latestAttemptId: "at-2" });
    expect(msOf(dispatched.startTime)).toBe(T0 + 3);
  });

  it.each(allRolloutStatuses.filter((s) => s !== S.QUEUING && s !== S.REQUEUING))("%s cannot be dispatched", (status) => {
    expect(() => dispatchRollout(rolloutFixture({ status }), attemptFixture(), T0)).toThrow(DomainError);
  });
});

describe("effects derive from the two states", () => {
  const cases: [RolloutStatus | undefined, RolloutStatus, { enqueue: boolean; dequeue: boolean; finished: boolean }][] = [
    [undefined, S.QUEUING, { enqueue: true, dequeue: false, finished: false }],
    [S.QUEUING, S.PREPARING, { enqueue: false, dequeue: true, finished: false }],
    [S.RUNNING, S.REQUEUING, { enqueue: true, dequeue: false, finished: false }],
    [S.REQUEUING, S.RUNNING, { enqueue: false, dequeue: true, finished: false }],
    [S.QUEUING, S.CANCELLED, { enqueue: false, dequeue: true, finished: true }],
    [S.RUNNING, S.SUCCEEDED, { enqueue: false, dequeue: false, finished: true }],
    [S.RUNNING, S.FAILED, { enqueue: false, dequeue: false, finished: true }],
    [S.RUNNING, S.RUNNING, { enqueue: false, dequeue: false, finished: false }],
  ];
  it.each(cases)("%s → %s", (before, after, expected) => {
    const from = before === undefined ? undefined : rolloutFixture({ status: before });
    expect(rolloutEffects(from, rolloutFixture({ status: after }))).toEqual(expected);
  });
});

function catchError(run: () => unknown): unknown {
  try {
    run();
  } catch (error) {
    return error;
  }
  return undefined;
}
