import { describe, expect, it } from "vitest";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { WorkerStatus } from "../../src/gen/runnerline/v1/worker_pb.js";
import {
  cordonWorker,
  drainWorker,
  isCordoned,
  MAX_CORDON_REASON_LENGTH,
  requireCordonReason,
  uncordonWorker,
} from "../../src/server/domain/cordon.js";
import { DomainError } from "../../src/server/domain/errors.js";
import { msOf } from "../../src/server/domain/time.js";
import { attachSession, detachSession, holdAttempt, newWorkerRecord, settle, type WorkerRecord } from "../../src/server/domain/worker.js";
import { type RowReader, WorkingSet } from "../../src/server/transitions/changes.js";
import { claim, WorkerCordonedError } from "../../src/server/transitions/steps.js";
import { attemptFixture, rolloutFixture, T0 } from "../fixtures.js";

const liveness = { heartbeatGraceMs: 100 };
const opening = { labels: {}, capacity: 2, clientVersion: "test", peer: "127.0.0.1" };
const byOps = { reason: "disk swap", by: "ops" };

const connected = (): WorkerRecord => attachSession(newWorkerRecord("w-1", T0), opening, liveness, T0);

describe("an operator's cordon (domain/cordon.ts)", () => {
  it("cordon records who, why and when, and bumps the version; a second cordon changes nothing", () => {
    const before = connected();
    const cordoned = cordonWorker(before, byOps, T0 + 5);
    expect(cordoned.worker).toMatchObject({ cordoned: true, cordonReason: "disk swap", cordonedBy: "ops", draining: false });
    expect(msOf(cordoned.worker.cordonTime)).toBe(T0 + 5);
    expect(cordoned.worker.version).toBe(before.worker.version + 1n);
    expect(isCordoned(cordoned.worker)).toBe(true);
    expect(cordonWorker(cordoned, { reason: "other", by: "someone" }, T0 + 9)).toBe(cordoned);
  });

  it("the cordon does not touch the status or the held attempts", () => {
    const busy = holdAttempt(connected(), attemptFixture({ attemptId: "at-1", workerId: "w-1" }), liveness, T0);
    const cordoned = cordonWorker(busy, byOps, T0);
    expect(cordoned.worker.status).toBe(WorkerStatus.BUSY);
    expect(cordoned.worker.currentAttemptIds).toEqual(["at-1"]);
    expect(settle(cordoned, liveness, T0).worker.status).toBe(WorkerStatus.BUSY);
  });

  it("uncordon clears the cordon and a drain; an uncordoned worker stays as it is", () => {
    const free = connected();
    expect(uncordonWorker(free)).toBe(free);
    const drained = drainWorker(free, byOps, T0);
    const lifted = uncordonWorker(drained);
    expect(lifted.worker).toMatchObject({ cordoned: false, draining: false, cordonReason: "", cordonedBy: "", cordonTime: undefined });
    expect(lifted.worker.version).toBe(drained.worker.version + 1n);
  });

  it("drain cordons and marks draining (once); a cordoned worker keeps its first cordon's reason", () => {
    const drained = drainWorker(connected(), byOps, T0);
    expect(drained.worker).toMatchObject({ cordoned: true, draining: true, cordonReason: "disk swap" });
    expect(drainWorker(drained, byOps, T0 + 1)).toBe(drained);
    const first = cordonWorker(connected(), { reason: "first", by: "a" }, T0);
    expect(drainWorker(first, byOps, T0 + 1).worker).toMatchObject({ draining: true, cordonReason: "first", cordonedBy: "a" });
  });

  it("drain is refused for a worker without a runner to tell: never had a session, or left", () => {
    const unary = newWorkerRecord("w-1", T0);
    expect(() => drainWorker(unary, byOps, T0)).toThrow(/never opened a runner session/);
    const left = detachSession(connected(), true, liveness, T0);
    const error = (() => {
      try {
        drainWorker(left, byOps, T0);
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(DomainError);
    expect((error as DomainError).kind).toBe("failed_precondition");
    // A lost stream is not the end: the runner hears the drain when it reconnects.
    const lost = detachSession(connected(), false, liveness, T0);
    expect(drainWorker(lost, byOps, T0).worker.draining).toBe(true);
  });

  it("the drain ends when the runner leaves with Goodbye, not when its stream is lost; the cordon stays", () => {
    const drained = drainWorker(connected(), byOps, T0);
    const lost = detachSession(drained, false, liveness, T0);
    expect(lost.worker).toMatchObject({ draining: true, cordoned: true });
    const left = detachSession(drained, true, liveness, T0);
    expect(left.worker).toMatchObject({ draining: false, cordoned: true, status: WorkerStatus.OFFLINE });
  });

  it("a reason is bounded", () => {
    expect(requireCordonReason("reason", "x".repeat(MAX_CORDON_REASON_LENGTH))).toHaveLength(MAX_CORDON_REASON_LENGTH);
    expect(() => requireCordonReason("reason", "x".repeat(MAX_CORDON_REASON_LENGTH + 1))).toThrow(/reason is 1025 characters long/);
  });
});

describe("the claim refuses a cordoned worker in the same operation", () => {
  const queued = rolloutFixture({ status: RolloutStatus.QUEUING, attemptCount: 0, latestAttemptId: "" });
  const rowsWith = (worker: WorkerRecord): RowReader => ({
    rollout: (id) => (id === queued.rolloutId ? queued : undefined),
    attempt: () => undefined,
    worker: (id) => (id === "w-1" ? worker : undefined),
  });
  const request = { now: T0, liveness, workerId: "w-1", epoch: undefined, rolloutIds: [queued.rolloutId], newAttemptId: () => "at-9" };

  it("WorkerCordonedError, and nothing is written; uncordoned, the same claim takes the rollout", () => {
    const cordoned = cordonWorker(connected(), byOps, T0);
    const refused = new WorkingSet(rowsWith(cordoned));
    expect(() => claim(refused, request)).toThrow(WorkerCordonedError);
    expect(refused.changes()).toEqual({ rollouts: [], attempts: [], workers: [] });
    const taken = new WorkingSet(rowsWith(uncordonWorker(cordoned)));
    expect(claim(taken, request).map((c) => c.attempt.attemptId)).toEqual(["at-9"]);
  });
});
