import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { AttemptErrorKind, AttemptStatus } from "../src/gen/runnerline/v1/attempt_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  type EnqueueRolloutRequest,
  EnqueueRolloutRequestSchema,
  RolloutConfigSchema,
  RolloutStatus,
} from "../src/gen/runnerline/v1/rollout_pb.js";
import { WorkerStatus } from "../src/gen/runnerline/v1/worker_pb.js";
import { DomainError } from "../src/server/domain/errors.js";
import { msOf } from "../src/server/domain/time.js";
import { coordinatorOn, LIVENESS, OPENING, RecordingLink, STORES } from "./harness.js";

const A = AttemptStatus;
const R = RolloutStatus;
const W = WorkerStatus;

function request(
  fields: MessageInitShape<typeof EnqueueRolloutRequestSchema> = {},
  config?: MessageInitShape<typeof RolloutConfigSchema>,
): EnqueueRolloutRequest {
  return create(EnqueueRolloutRequestSchema, {
    ...fields,
    config: config === undefined ? undefined : create(RolloutConfigSchema, config),
  });
}

async function rejection(promise: Promise<unknown>): Promise<DomainError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DomainError);
  return error as DomainError;
}

describe.each(STORES)("coordinator on the %s store", (_, makeStore) => {
  const setup = async () => coordinatorOn(await makeStore());

  describe("heartbeats (acceptance 1, 2, 12)", () => {
    it("a heartbeat for an unseen worker creates it UNKNOWN with its stats and time stamp", async () => {
      const { coordinator, clock } = await setup();
      const worker = await coordinator.heartbeat("w-new", { extraStats: { cpu: 0.5 } });
      expect(worker.status).toBe(W.UNKNOWN);
      expect(worker.extraStats).toEqual({ cpu: 0.5 });
      expect(msOf(worker.lastHeartbeatTime)).toBe(clock.now());
      expect((await coordinator.getWorker("w-new")).extraStats).toEqual({ cpu: 0.5 });
    });

    it("a heartbeat without stats keeps the previous stats and never changes status or assignment", async () => {
      const { coordinator, clock } = await setup();
      await coordinator.enqueue([request()]);
      await coordinator.dequeueFor("w-1");
      const busy = (await coordinator.getWorker("w-1"));
      await coordinator.heartbeat("w-1", { extraStats: { gpu: 1 } });
      clock.advance(10);
      const worker = await coordinator.heartbeat("w-1", {});
      expect(worker.extraStats).toEqual({ gpu: 1 });
      expect(worker.status).toBe(W.BUSY);
      expect(worker.currentAttemptIds).toEqual(busy.currentAttemptIds);
      expect(worker.lastBusyTime).toEqual(busy.lastBusyTime);
    });

    it("a unary heartbeat does not keep an attempt alive; a stream heartbeat listing it does", async () => {
      const { coordinator, clock } = await setup();
      await coordinator.enqueue([request({}, { unresponsiveTimeout: durationFromMs(1_000) })]);
      const assigned = await coordinator.dequeueFor("w-1");
      clock.advance(800);
      await coordinator.heartbeat("w-1", {});
      clock.advance(800);
      await coordinator.runWatchdog();
      expect((await coordinator.getAttempt(assigned!.attempt.attemptId)).status).toBe(A.UNRESPONSIVE);

      const [second] = await coordinator.enqueue([request({}, { unresponsiveTimeout: durationFromMs(1_000) })]);
      const next = await coordinator.dequeueFor("w-2");
      expect(next?.rollout.rolloutId).toBe(second!.rolloutId);
      clock.advance(800);
      await coordinator.heartbeat("w-2", {}, [next!.attempt.attemptId]);
      clock.advance(800);
      await coordinator.runWatchdog();
      expect((await coordinator.getAttempt(next!.attempt.attemptId)).status).toBe(A.RUNNING);
    });
  });

  describe("queue and dequeue (acceptance 3, 4, 5)", () => {
    it("is FIFO over five rollouts", async () => {
      const { coordinator } = await setup();
      const rollouts = await coordinator.enqueue([1, 2, 3, 4, 5].map(() => request()));
      const order: string[] = [];
      for (let i = 0; i < 5; i++) order.push((await coordinator.dequeueFor("w-1"))!.rollout.rolloutId);
      expect(order).toEqual(rollouts.map((r) => r.rolloutId));
      expect(await coordinator.dequeueFor("w-1")).toBeUndefined();
    });

    it("skips rollouts cancelled while queued; an empty queue returns nothing", async () => {
      const { coordinator } = await setup();
      const [first, second] = await coordinator.enqueue([request(), request()]);
      await coordinator.cancel(first!.rolloutId);
      expect((await coordinator.dequeueFor("w-1"))?.rollout.rolloutId).toBe(second!.rolloutId);
      expect(await coordinator.dequeueFor("w-1")).toBeUndefined();
    });

    it("a dequeue creates attempt N+1 (PREPARING, created now) and moves the rollout to PREPARING", async () => {
      const { coordinator, clock } = await setup();
      await coordinator.enqueue([request()]);
      const { rollout, attempt } = (await coordinator.dequeueFor("w-1"))!;
      expect(rollout).toMatchObject({ status: R.PREPARING, attemptCount: 1, latestAttemptId: attempt.attemptId });
      expect(attempt).toMatchObject({ status: A.PREPARING, sequenceId: 1, rolloutId: rollout.rolloutId, workerId: "w-1" });
      expect(msOf(attempt.createTime)).toBe(clock.now());
      expect(msOf(rollout.startTime)).toBe(clock.now());
    });

    it("an empty dequeue leaves the worker IDLE with last_dequeue_time; an assignment makes it BUSY", async () => {
      const { coordinator, clock } = await setup();
      await coordinator.dequeueFor("w-1");
      let worker = (await coordinator.getWorker("w-1"));
      expect(worker.status).toBe(W.IDLE);
      expect(msOf(worker.lastDequeueTime)).toBe(clock.now());
      await coordinator.enqueue([request()]);
      clock.advance(5);
      const { attempt } = (await coordinator.dequeueFor("w-1"))!;
      worker = (await coordinator.getWorker("w-1"));
      expect(worker).toMatchObject({ status: W.BUSY, currentAttemptIds: [attempt.attemptId], currentRolloutIds: [attempt.rolloutId] });
      expect(msOf(worker.lastBusyTime)).toBe(clock.now());
      expect(msOf(worker.lastBusyTime)! >= msOf(worker.lastDequeueTime)!).toBe(true);
    });
  });

  describe("attempt outcomes (acceptance 6, 7, 8, 9)", () => {
    it("SUCCEEDED makes the worker IDLE, clears current_*, stamps last_idle_time and the attempt's end_time", async () => {
      const { coordinator, clock } = await setup();
      await coordinator.enqueue([request()]);
      const { attempt, rollout } = (await coordinator.dequeueFor("w-1"))!;
      clock.advance(20);
      const done = await coordinator.report(attempt.attemptId, { status: A.SUCCEEDED, errorMessage: "" });
      expect(msOf(done.endTime)).toBe(clock.now());
      const worker = (await coordinator.getWorker("w-1"));
      expect(worker).toMatchObject({ status: W.IDLE, currentAttemptIds: [], currentRolloutIds: [] });
      expect(msOf(worker.lastIdleTime)! >= msOf(worker.lastBusyTime)!).toBe(true);
      expect((await coordinator.getRollout(rollout.rolloutId)).status).toBe(R.SUCCEEDED);
    });

    it.each([
      ["timeout", { timeout: durationFromMs(100) }, A.TIMEOUT],
      ["unresponsive", { unresponsiveTimeout: durationFromMs(100) }, A.UNRESPONSIVE],
    ] as const)("a %s verdict makes the worker UNKNOWN and clears current_*, with end_time set", async (_, config, status) => {
      const { coordinator, clock } = await setup();
      await coordinator.enqueue([request({}, config)]);
      const { attempt, rollout } = (await coordinator.dequeueFor("w-1"))!;
      await coordinator.report(attempt.attemptId, { status: A.RUNNING, errorMessage: "" });
      clock.advance(101);
      await coordinator.runWatchdog();
      const after = (await coordinator.getAttempt(attempt.attemptId));
      expect(after.status).toBe(status);
      expect(msOf(after.endTime)).toBe(clock.now());
      expect((await coordinator.getWorker("w-1"))).toMatchObject({ status: W.UNKNOWN, currentAttemptIds: [] });
      expect((await coordinator.getRollout(rollout.rolloutId)).status).toBe(R.FAILED);
    });

    it("FAILED → retry (attempt 2, back of the queue) → SUCCEEDED", async () => {
      const { coordinator } = await setup();
      const [retried, other] = await coordinator.enqueue([
        request({}, { maxAttempts: 2, retryOn: [A.FAILED] }),
        request(),
      ]);
      const first = (await coordinator.dequeueFor("w-1"))!;
      await coordinator.report(first.attempt.attemptId, { status: A.FAILED, errorMessage: "crashed" });
      expect((await coordinator.getRollout(retried!.rolloutId)).status).toBe(R.REQUEUING);
      expect((await coordinator.getAttempt(first.attempt.attemptId)).error).toMatchObject({ message: "crashed", kind: AttemptErrorKind.REPORTED });
      expect((await coordinator.dequeueFor("w-1"))!.rollout.rolloutId).toBe(other!.rolloutId);
      const second = (await coordinator.dequeueFor("w-1"))!;
      expect(second.rollout.rolloutId).toBe(retried!.rolloutId);
      expect(second.attempt.sequenceId).toBe(2);
      await coordinator.report(second.attempt.attemptId, { status: A.SUCCEEDED, errorMessage: "" });
      expect((await coordinator.getRollout(retried!.rolloutId))).toMatchObject({ status: R.SUCCEEDED, attemptCount: 2 });
    });

    it("FAILED without retry_on, or at max_attempts, fails the rollout", async () => {
      const { coordinator } = await setup();
      const [rollout] = await coordinator.enqueue([request({}, { maxAttempts: 3 })]);
      const { attempt } = (await coordinator.dequeueFor("w-1"))!;
      await coordinator.report(attempt.attemptId, { status: A.FAILED, errorMessage: "x" });
      expect((await coordinator.getRollout(rollout!.rolloutId)).status).toBe(R.FAILED);
    });

    it("a late report on an older attempt is recorded there, refused, and never moves the rollout", async () => {
      const { coordinator, clock } = await setup();
      const [rollout] = await coordinator.enqueue([request({}, { maxAttempts: 2, retryOn: [A.TIMEOUT], timeout: durationFromMs(50) })]);
      const first = (await coordinator.dequeueFor("w-1"))!;
      clock.advance(51);
      await coordinator.runWatchdog();
      const second = (await coordinator.dequeueFor("w-2"))!;
      const error = await rejection(coordinator.report(first.attempt.attemptId, { status: A.SUCCEEDED, errorMessage: "" }));
      expect(error.kind).toBe("failed_precondition");
      const old = (await coordinator.getAttempt(first.attempt.attemptId));
      expect(old).toMatchObject({ status: A.TIMEOUT, lateStatus: A.SUCCEEDED });
      expect((await coordinator.getRollout(rollout!.rolloutId))).toMatchObject({ status: R.PREPARING, latestAttemptId: second.attempt.attemptId });
      // The stale report did not flip the worker that is busy elsewhere (upstream quirk).
      await coordinator.dequeueFor("w-1");
      expect((await coordinator.getWorker("w-2")).status).toBe(W.BUSY);
    });

    it("a repeated final report (resent after a reconnect) is accepted as a no-op", async () => {
      const { coordinator } = await setup();
      await coordinator.enqueue([request()]);
      const { attempt } = (await coordinator.dequeueFor("w-1"))!;
      const done = await coordinator.report(attempt.attemptId, { status: A.SUCCEEDED, errorMessage: "" });
      expect(await coordinator.report(attempt.attemptId, { status: A.SUCCEEDED, errorMessage: "" })).toEqual(done);
    });

    it("a report from a worker that does not hold the attempt is refused", async () => {
      const { coordinator } = await setup();
      await coordinator.enqueue([request()]);
      const { attempt } = (await coordinator.dequeueFor("w-1"))!;
      const error = await rejection(coordinator.report(attempt.attemptId, { status: A.SUCCEEDED, errorMessage: "" }, { workerId: "w-9" }));
      expect(error.kind).toBe("failed_precondition");
    });

    it("expected_version guards updates (ABORTED on mismatch)", async () => {
      const { coordinator } = await setup();
      await coordinator.enqueue([request()]);
      const { attempt } = (await coordinator.dequeueFor("w-1"))!;
      const error = await rejection(coordinator.report(attempt.attemptId, { status: A.RUNNING, errorMessage: "" }, { expectedVersion: 99n }));
      expect(error.kind).toBe("aborted");
      const ok = await coordinator.report(attempt.attemptId, { status: A.RUNNING, errorMessage: "" }, { expectedVersion: attempt.version });
      expect(ok.version).toBe(attempt.version + 1n);
    });
  });

  describe("watchdog and revival (acceptance 10, 11)", () => {
    it("timeout 100 ms with retry_on [TIMEOUT], max 2: the attempt is TIMEOUT and the rollout REQUEUING", async () => {
      const { coordinator, clock } = await setup();
      const [rollout] = await coordinator.enqueue([request({}, { timeout: durationFromMs(100), maxAttempts: 2, retryOn: [A.TIMEOUT] })]);
      const { attempt } = (await coordinator.dequeueFor("w-1"))!;
      clock.advance(150);
      await coordinator.runWatchdog();
      expect((await coordinator.getAttempt(attempt.attemptId)).status).toBe(A.TIMEOUT);
      expect((await coordinator.getRollout(rollout!.rolloutId)).status).toBe(R.REQUEUING);
    });

    it("a sign of life on an UNRESPONSIVE attempt whose rollout waits for a retry revives both and unqueues it", async () => {
      const { coordinator, clock } = await setup();
      const [rollout] = await coordinator.enqueue([
        request({}, { unresponsiveTimeout: durationFromMs(100), maxAttempts: 2, retryOn: [A.UNRESPONSIVE] }),
      ]);
      const { attempt } = (await coordinator.dequeueFor("w-1"))!;
      clock.advance(101);
      await coordinator.runWatchdog();
      expect((await coordinator.getRollout(rollout!.rolloutId)).status).toBe(R.REQUEUING);
      await coordinator.report(attempt.attemptId, { status: A.RUNNING, errorMessage: "" });
      const revived = (await coordinator.getAttempt(attempt.attemptId));
      expect(revived.status).toBe(A.RUNNING);
      expect(revived.endTime).toBeUndefined();
      expect((await coordinator.getRollout(rollout!.rolloutId)).status).toBe(R.RUNNING);
      expect((await coordinator.getWorker("w-1")).status).toBe(W.BUSY);
      expect(await coordinator.dequeueFor("w-2")).toBeUndefined();
    });

    it("a runner still connected is told to stop an attempt the watchdog ended, and again if its heartbeat lists it", async () => {
      const { coordinator, clock } = await setup();
      const link = new RecordingLink("w-1");
      await coordinator.openSession(link, OPENING, []);
      await coordinator.grantCredits(link, 1);
      await coordinator.enqueue([request({}, { timeout: durationFromMs(10) })]);
      const attemptId = link.ofCase("assignment")[0]!.attempt!.attemptId;
      clock.advance(11);
      await coordinator.runWatchdog();
      expect(link.ofCase("cancel").map((c) => c.attemptId)).toEqual([attemptId]);
      await coordinator.heartbeat("w-1", {}, [attemptId]);
      expect(link.ofCase("cancel").map((c) => c.attemptId)).toEqual([attemptId, attemptId]);
      expect((await coordinator.getAttempt(attemptId)).status).toBe(A.TIMEOUT);
    });

    it("a report on a TIMEOUT attempt only records it", async () => {
      const { coordinator, clock } = await setup();
      await coordinator.enqueue([request({}, { timeout: durationFromMs(10), maxAttempts: 2, retryOn: [A.TIMEOUT] })]);
      const { attempt } = (await coordinator.dequeueFor("w-1"))!;
      clock.advance(11);
      await coordinator.runWatchdog();
      await rejection(coordinator.report(attempt.attemptId, { status: A.RUNNING, errorMessage: "" }));
      expect((await coordinator.getAttempt(attempt.attemptId)).status).toBe(A.TIMEOUT);
    });

    it("an attached worker whose heartbeats are late becomes UNKNOWN, and IDLE again when they resume", async () => {
      const { coordinator, clock } = await setup();
      const link = new RecordingLink("w-1");
      await coordinator.openSession(link, OPENING, []);
      await coordinator.heartbeat("w-1", {});
      expect((await coordinator.getWorker("w-1")).status).toBe(W.IDLE);
      clock.advance(LIVENESS.heartbeatGraceMs + 1);
      await coordinator.runWatchdog();
      expect((await coordinator.getWorker("w-1")).status).toBe(W.UNKNOWN);
      await coordinator.heartbeat("w-1", {});
      expect((await coordinator.getWorker("w-1")).status).toBe(W.IDLE);
    });
  });

  describe("cancel and wait (acceptance 17, 18)", () => {
    it("cancel sets end_time, wakes waiters, unqueues, and tells the holder", async () => {
      const { coordinator, clock } = await setup();
      const link = new RecordingLink("w-1");
      await coordinator.openSession(link, OPENING, []);
      const [queued, held] = await coordinator.enqueue([request(), request()]);
      await coordinator.grantCredits(link, 1);
      const assignment = link.ofCase("assignment")[0]!;
      expect(assignment.rollout?.rolloutId).toBe(queued!.rolloutId);
      const waiting = coordinator.waitFor([queued!.rolloutId, held!.rolloutId], undefined, new AbortController().signal);
      clock.advance(7);
      await coordinator.cancel(queued!.rolloutId);
      await coordinator.cancel(held!.rolloutId);
      const finished = await waiting;
      expect(finished.map((r) => r.status)).toEqual([R.CANCELLED, R.CANCELLED]);
      expect(msOf(finished[0]!.endTime)).toBe(clock.now());
      expect(link.ofCase("cancel")).toEqual([expect.objectContaining({ attemptId: assignment.attempt!.attemptId })]);
      expect((await coordinator.getAttempt(assignment.attempt!.attemptId)).error?.kind).toBe(AttemptErrorKind.CANCELLED);
      expect((await coordinator.getWorker("w-1")).status).toBe(W.IDLE);
      expect(await coordinator.dequeueFor("w-2")).toBeUndefined();
      expect((await rejection(coordinator.cancel(queued!.rolloutId))).kind).toBe("failed_precondition");
    });

    it("wait returns only finished rollouts; timeout 0 returns at once; unknown ids are NOT_FOUND", async () => {
      const { coordinator } = await setup();
      const [a, b] = await coordinator.enqueue([request(), request()]);
      await coordinator.cancel(a!.rolloutId);
      const now = await coordinator.waitFor([a!.rolloutId, b!.rolloutId], 0, new AbortController().signal);
      expect(now.map((r) => r.rolloutId)).toEqual([a!.rolloutId]);
      const later = await coordinator.waitFor([a!.rolloutId, b!.rolloutId], 20, new AbortController().signal);
      expect(later.map((r) => r.rolloutId)).toEqual([a!.rolloutId]);
      expect((await rejection(coordinator.waitFor(["ro-missing"], 0, new AbortController().signal))).kind).toBe("not_found");
    });
  });

  describe("enqueue idempotency", () => {
    it("the same rollout_id and content returns the existing rollout; different content is ALREADY_EXISTS", async () => {
      const { coordinator } = await setup();
      const [first] = await coordinator.enqueue([request({ rolloutId: "job-1", resourcesId: "r1" })]);
      const [again] = await coordinator.enqueue([request({ rolloutId: "job-1", resourcesId: "r1" })]);
      expect(again).toEqual(first);
      expect((await rejection(coordinator.enqueue([request({ rolloutId: "job-1", resourcesId: "r2" })]))).kind).toBe("already_exists");
      expect((await rejection(coordinator.enqueue([request({ rolloutId: "job-2" }), request({ rolloutId: "job-2", resourcesId: "x" })]))).kind).toBe(
        "already_exists",
      );
      await expect(coordinator.getRollout("job-2")).rejects.toThrow(DomainError);
    });

    it("a batch that repeats enqueued rollouts returns them and adds only the new ones, the same id twice included", async () => {
      const { coordinator, store } = await setup();
      const [first] = await coordinator.enqueue([request({ rolloutId: "job-1", resourcesId: "r1" })]);
      const batch = await coordinator.enqueue([
        request({ rolloutId: "job-1", resourcesId: "r1" }),
        request({ rolloutId: "job-3" }),
        request({ rolloutId: "job-1", resourcesId: "r1" }),
      ]);
      expect(batch[0]).toEqual(first);
      expect(batch[2]).toEqual(first);
      expect(batch[1]!.rolloutId).toBe("job-3");
      expect((await coordinator.getRollout("job-3")).status).toBe(R.QUEUING);
      expect(await store.queueLength()).toBe(2);
    });

    it("reads nothing before inserting rollouts whose ids are new (the insert refuses a taken one)", async () => {
      const store = await makeStore();
      let reads = 0;
      const counted = new Proxy(store, {
        get(target, key, receiver) {
          const value = Reflect.get(target, key, receiver) as unknown;
          if (typeof value !== "function") return value;
          return (...args: unknown[]) => {
            if (key === "getRollout" || key === "getRollouts") reads++;
            return (value as (...a: unknown[]) => unknown).apply(target, args);
          };
        },
      });
      const { coordinator } = coordinatorOn(counted);
      await coordinator.enqueue([request({ rolloutId: "job-1" }), request({ rolloutId: "job-2" })]);
      expect(reads).toBe(0);
      await coordinator.enqueue([request({ rolloutId: "job-1" })]);
      expect(reads).toBeGreaterThan(0); // a replay: read and compared
    });
  });

  describe("runner sessions", () => {
    it("pushes work to a waiting runner at once and never beyond its credits", async () => {
      const { coordinator } = await setup();
      const link = new RecordingLink("w-1");
      await coordinator.openSession(link, OPENING, []);
      expect(link.ofCase("welcome")).toHaveLength(1);
      await coordinator.grantCredits(link, 2);
      await coordinator.enqueue([request(), request(), request()]);
      expect(link.ofCase("assignment")).toHaveLength(2);
      expect(link.credits).toBe(0);
      await coordinator.grantCredits(link, 1);
      expect(link.ofCase("assignment")).toHaveLength(3);
    });

    it("serves waiting runners round-robin", async () => {
      const { coordinator } = await setup();
      const links = [new RecordingLink("w-a"), new RecordingLink("w-b"), new RecordingLink("w-c")];
      for (const link of links) {
        await coordinator.openSession(link, OPENING, []);
        await coordinator.grantCredits(link, 2);
      }
      await coordinator.enqueue([1, 2, 3].map(() => request()));
      expect(links.map((l) => l.ofCase("assignment").length)).toEqual([1, 1, 1]);
    });

    it("a second session for a worker replaces the first, which is closed with ABORTED", async () => {
      const { coordinator } = await setup();
      const old = new RecordingLink("w-1", "se-old");
      await coordinator.openSession(old, OPENING, []);
      const fresh = new RecordingLink("w-1", "se-new");
      await coordinator.openSession(fresh, OPENING, []);
      expect(old.closedWith?.kind).toBe("aborted");
      expect(old.replacedBy).toEqual({ sessionId: "se-new", peer: OPENING.peer });
      await coordinator.closeSession(old);
      expect((await coordinator.getWorker("w-1"))).toMatchObject({ connected: true });
    });

    it("a reconnect that lists its attempt resumes it; one it does not list is lost; unknown ones are cancelled", async () => {
      const { coordinator } = await setup();
      const first = new RecordingLink("w-1", "se-1");
      await coordinator.openSession(first, OPENING, []);
      await coordinator.grantCredits(first, 2);
      await coordinator.enqueue([request(), request()]);
      const [kept, dropped] = first.ofCase("assignment").map((a) => a.attempt!.attemptId);
      await coordinator.closeSession(first);
      expect((await coordinator.getWorker("w-1")).status).toBe(W.UNKNOWN);
      const second = new RecordingLink("w-1", "se-2");
      await coordinator.openSession(second, OPENING, [kept!, "at-unknown"]);
      expect(second.ofCase("welcome")[0]!.resumedAttemptIds).toEqual([kept]);
      expect(second.ofCase("cancel").map((c) => c.attemptId)).toEqual(["at-unknown"]);
      expect((await coordinator.getAttempt(kept!)).status).toBe(A.RUNNING);
      expect((await coordinator.getAttempt(dropped!)).status).toBe(A.UNRESPONSIVE);
      expect((await coordinator.getWorker("w-1"))).toMatchObject({ status: W.BUSY, currentAttemptIds: [kept] });
    });

    it("goodbye: no new work, OFFLINE once the stream ends", async () => {
      const { coordinator } = await setup();
      const link = new RecordingLink("w-1");
      await coordinator.openSession(link, OPENING, []);
      coordinator.goodbye(link);
      await coordinator.grantCredits(link, 1);
      await coordinator.enqueue([request()]);
      expect(link.ofCase("assignment")).toHaveLength(0);
      await coordinator.closeSession(link);
      expect((await coordinator.getWorker("w-1"))).toMatchObject({ status: W.OFFLINE, connected: false });
    });
  });
});

describe.each(STORES)("recovery after a restart on the %s store", (_, makeStore) => {
  it("attached workers come back UNKNOWN; in-flight attempts wait one grace period to be claimed", async () => {
    const store = await makeStore();
    const before = coordinatorOn(store);
    const link = new RecordingLink("w-1");
    await before.coordinator.openSession(link, OPENING, []);
    await before.coordinator.grantCredits(link, 2);
    await before.coordinator.enqueue([request(), request(), request()]);
    const [claimed, unclaimed] = link.ofCase("assignment").map((a) => a.attempt!.attemptId);

    // A new coordinator over the same store stands for the restarted process.
    const { coordinator, clock } = coordinatorOn(store, before.clock);
    clock.advance(LIVENESS.defaultUnresponsiveMs + 1);
    await coordinator.recover();
    expect((await coordinator.getWorker("w-1"))).toMatchObject({ status: W.UNKNOWN, connected: false });
    await coordinator.runWatchdog();
    expect((await coordinator.getAttempt(unclaimed!)).status).toBe(A.PREPARING);

    const again = new RecordingLink("w-1", "se-again");
    await coordinator.openSession(again, OPENING, [claimed!]);
    expect((await coordinator.getAttempt(claimed!)).status).toBe(A.RUNNING);
    expect((await coordinator.getAttempt(unclaimed!)).status).toBe(A.UNRESPONSIVE);
    await coordinator.grantCredits(again, 1);
    expect(again.ofCase("assignment")).toHaveLength(1);
  });

  it("an attempt nobody claims becomes UNRESPONSIVE after the grace period", async () => {
    const store = await makeStore();
    const before = coordinatorOn(store);
    await before.coordinator.enqueue([request()]);
    const { attempt } = (await before.coordinator.dequeueFor("w-1"))!;
    const { coordinator, clock } = coordinatorOn(store, before.clock);
    await coordinator.recover();
    clock.advance(LIVENESS.heartbeatGraceMs + 1);
    await coordinator.runWatchdog();
    expect((await coordinator.getAttempt(attempt.attemptId)).status).toBe(A.UNRESPONSIVE);
  });
});

describe.each(STORES)("rollout clocks, drain and the mass-drop brake on the %s store", (_, makeStore) => {
  const setup = async () => coordinatorOn(await makeStore());

  it("a rollout past its deadline ends FAILED with the reason, its attempt is aborted and its runner told", async () => {
    const { coordinator, clock } = await setup();
    const link = new RecordingLink("w-1");
    await coordinator.openSession(link, OPENING, []);
    await coordinator.grantCredits(link, 1);
    const [rollout] = await coordinator.enqueue([request({}, { deadline: durationFromMs(1_000), maxAttempts: 5, retryOn: [A.FAILED] })]);
    const assignment = link.ofCase("assignment")[0]!;
    await coordinator.report(assignment.attempt!.attemptId, { status: A.RUNNING, errorMessage: "" });
    clock.advance(1_000);
    await coordinator.runWatchdog();
    expect((await coordinator.getRollout(rollout!.rolloutId)).status).toBe(R.RUNNING);
    clock.advance(1);
    await coordinator.runWatchdog();
    const failed = (await coordinator.getRollout(rollout!.rolloutId));
    expect(failed.status).toBe(R.FAILED);
    expect(failed.failureReason).toContain("deadline");
    expect((await coordinator.getAttempt(assignment.attempt!.attemptId))).toMatchObject({
      status: A.FAILED,
      error: expect.objectContaining({ kind: AttemptErrorKind.DEADLINE_EXCEEDED }),
    });
    expect(link.ofCase("cancel").map((c) => c.attemptId)).toEqual([assignment.attempt!.attemptId]);
    expect((await coordinator.getWorker("w-1")).status).toBe(W.IDLE);
  });

  it("the deadline covers retries: a requeued rollout expires in the queue", async () => {
    const { coordinator, clock } = await setup();
    const [rollout] = await coordinator.enqueue([request({}, { deadline: durationFromMs(500), maxAttempts: 3, retryOn: [A.FAILED] })]);
    const { attempt } = (await coordinator.dequeueFor("w-1"))!;
    await coordinator.report(attempt.attemptId, { status: A.FAILED, errorMessage: "x" });
    clock.advance(501);
    await coordinator.runWatchdog();
    expect((await coordinator.getRollout(rollout!.rolloutId))).toMatchObject({ status: R.FAILED, attemptCount: 1 });
    expect(await coordinator.dequeueFor("w-1")).toBeUndefined();
  });

  it("queue_timeout fails a rollout never dispatched in time, and no longer applies once it was", async () => {
    const { coordinator, clock } = await setup();
    const [waiting, taken] = await coordinator.enqueue([
      request({}, { queueTimeout: durationFromMs(200) }),
      request({}, { queueTimeout: durationFromMs(200) }),
    ]);
    await coordinator.cancel(waiting!.rolloutId).then(() => undefined);
    const [stuck] = await coordinator.enqueue([request({}, { queueTimeout: durationFromMs(200) })]);
    expect((await coordinator.dequeueFor("w-1"))!.rollout.rolloutId).toBe(taken!.rolloutId);
    clock.advance(201);
    await coordinator.runWatchdog();
    const expired = (await coordinator.getRollout(stuck!.rolloutId));
    expect(expired.status).toBe(R.FAILED);
    expect(expired.failureReason).toContain("queue_timeout");
    expect((await coordinator.getRollout(taken!.rolloutId)).status).toBe(R.PREPARING);
  });

  it("a failed rollout records its last attempt's error as the failure reason", async () => {
    const { coordinator } = await setup();
    const [rollout] = await coordinator.enqueue([request()]);
    const { attempt } = (await coordinator.dequeueFor("w-1"))!;
    await coordinator.report(attempt.attemptId, { status: A.FAILED, errorMessage: "segfault" });
    expect((await coordinator.getRollout(rollout!.rolloutId)).failureReason).toBe("attempt 1 ended FAILED: segfault");
  });

  it("drain: no more dispatching, every runner told, resolves at once when no session holds an attempt", async () => {
    const { coordinator } = await setup();
    const links = [new RecordingLink("w-1"), new RecordingLink("w-2")];
    for (const link of links) await coordinator.openSession(link, OPENING, []);
    const draining = coordinator.drain("server shutting down", 5_000);
    expect(links.map((l) => l.ofCase("drain").length)).toEqual([1, 1]);
    await coordinator.grantCredits(links[0]!, 1);
    await coordinator.enqueue([request()]);
    expect(links[0]!.ofCase("assignment")).toHaveLength(0);
    expect(await coordinator.dequeueFor("w-3")).toBeUndefined();
    expect(await draining).toEqual({ held: [] });
  });

  async function fleetDrop(size: number, dropped: number) {
    const { coordinator, clock } = await setup();
    const links = Array.from({ length: size }, (_, i) => new RecordingLink(`w-${i}`));
    for (const link of links) {
      await coordinator.openSession(link, OPENING, []);
      await coordinator.grantCredits(link, 1);
    }
    await coordinator.enqueue(links.map(() => request()));
    // Established runners (the only ones the brake counts): connected for a heartbeat interval, and beating.
    clock.advance(LIVENESS.heartbeatIntervalMs);
    for (const link of links) await coordinator.heartbeat(link.workerId, {}, []);
    for (const link of links.slice(0, dropped)) await coordinator.closeSession(link);
    clock.advance(LIVENESS.defaultUnresponsiveMs + 1);
    // The runners that stayed keep beating; their attempts stay alive.
    for (const link of links.slice(dropped)) {
      await coordinator.heartbeat(link.workerId, {}, link.ofCase("assignment").map((a) => a.attempt!.attemptId));
    }
    await coordinator.runWatchdog();
    const statusOf = async (link: RecordingLink) => (await coordinator.getAttempt(link.ofCase("assignment")[0]!.attempt!.attemptId)).status;
    return { coordinator, clock, links, statusOf };
  }

  it("the brake engages when 8 of 12 runners drop at once: their attempts are held, then judged", async () => {
    const { coordinator, clock, links, statusOf } = await fleetDrop(12, 8);
    expect(await Promise.all(links.slice(0, 8).map(statusOf))).toEqual(Array(8).fill(A.PREPARING));
    expect((await coordinator.getWorker("w-0")).status).toBe(W.UNKNOWN);
    clock.advance(4 * LIVENESS.heartbeatGraceMs);
    await coordinator.runWatchdog();
    expect(await Promise.all(links.slice(0, 8).map(statusOf))).toEqual(Array(8).fill(A.UNRESPONSIVE));
  });

  it("the brake does not engage for 1 of 1, nor for a minority of a large fleet", async () => {
    const lone = await fleetDrop(1, 1);
    expect(await lone.statusOf(lone.links[0]!)).toBe(A.UNRESPONSIVE);
    const minority = await fleetDrop(12, 6);
    expect(await Promise.all(minority.links.slice(0, 6).map(minority.statusOf))).toEqual(Array(6).fill(A.UNRESPONSIVE));
    expect(await Promise.all(minority.links.slice(6).map(minority.statusOf))).toEqual(Array(6).fill(A.RUNNING));
  });
});

describe.each(STORES)("issue 8 dispatch rules on the %s store", (_, makeStore) => {
  const setup = async () => coordinatorOn(await makeStore());
  const retryOnce = { maxAttempts: 2, retryOn: [A.FAILED] };
  const fail = (coordinator: Awaited<ReturnType<typeof setup>>["coordinator"], attemptId: string) =>
    coordinator.report(attemptId, { status: A.FAILED, errorMessage: "exit 127" });

  describe("labels (§2)", () => {
    it("only a worker carrying every required label gets the rollout; others take what they may, FIFO", async () => {
      const { coordinator } = await setup();
      const plain = new RecordingLink("w-plain");
      await coordinator.openSession(plain, OPENING, []);
      const [gpu, any1, any2] = await coordinator.enqueue([
        request({}, { requiredLabels: { gpu: "h100", zone: "a" } }),
        request(),
        request(),
      ]);
      await coordinator.grantCredits(plain, 3);
      expect(plain.ofCase("assignment").map((a) => a.rollout!.rolloutId)).toEqual([any1!.rolloutId, any2!.rolloutId]);
      expect((await coordinator.getRollout(gpu!.rolloutId)).status).toBe(R.QUEUING);
      expect(coordinator.unroutableCount()).toBe(1);
      expect(await coordinator.unroutableRolloutIds()).toEqual([gpu!.rolloutId]);

      const almost = new RecordingLink("w-almost");
      await coordinator.openSession(almost, { ...OPENING, labels: { gpu: "h100", zone: "b" } }, []);
      await coordinator.grantCredits(almost, 1);
      expect(almost.ofCase("assignment")).toHaveLength(0);
      expect(coordinator.unroutableCount()).toBe(1);

      const carrier = new RecordingLink("w-gpu");
      await coordinator.openSession(carrier, { ...OPENING, labels: { gpu: "h100", zone: "a", extra: "x" } }, []);
      expect(coordinator.unroutableCount()).toBe(0);
      await coordinator.grantCredits(carrier, 1);
      expect(carrier.ofCase("assignment").map((a) => a.rollout!.rolloutId)).toEqual([gpu!.rolloutId]);
    });

    it("a unary dequeue skips rollouts whose labels the worker lacks", async () => {
      const { coordinator } = await setup();
      const [labelled, open] = await coordinator.enqueue([request({}, { requiredLabels: { pool: "a" } }), request()]);
      expect((await coordinator.dequeueFor("w-1"))?.rollout.rolloutId).toBe(open!.rolloutId);
      expect(await coordinator.dequeueFor("w-1")).toBeUndefined();
      expect((await coordinator.getRollout(labelled!.rolloutId)).status).toBe(R.QUEUING);
    });
  });

  describe("priority (§2)", () => {
    it("higher priority first, FIFO within a priority, across label sets a worker may serve", async () => {
      const { coordinator } = await setup();
      const rollouts = await coordinator.enqueue([
        request({ priority: 0 }),
        request({ priority: 5 }, { requiredLabels: { pool: "a" } }),
        request({ priority: -1 }),
        request({ priority: 5 }),
        request({ priority: 0 }, { requiredLabels: { pool: "a" } }),
      ]);
      const link = new RecordingLink("w-1");
      await coordinator.openSession(link, { ...OPENING, labels: { pool: "a" } }, []);
      await coordinator.grantCredits(link, 5);
      const order = link.ofCase("assignment").map((a) => rollouts.findIndex((r) => r.rolloutId === a.rollout!.rolloutId));
      expect(order).toEqual([1, 3, 0, 4, 2]);
      expect(link.ofCase("assignment")[0]!.rollout!.priority).toBe(5);
    });
  });

  describe("retry delay (§2)", () => {
    it("waits retry_delay × coefficient^(n−1), at most max_retry_delay, before the next attempt", async () => {
      const { coordinator, clock } = await setup();
      const [rollout] = await coordinator.enqueue([
        request({}, { maxAttempts: 4, retryOn: [A.FAILED], retryDelay: durationFromMs(1_000), maxRetryDelay: durationFromMs(3_000) }),
      ]);
      const waits: number[] = [];
      // A different worker each time, so that neither retry-elsewhere nor quarantine plays a part.
      for (let n = 1; n <= 3; n++) {
        const { attempt } = (await coordinator.dequeueFor(`w-${n}`))!;
        await fail(coordinator, attempt.attemptId);
        const requeued = (await coordinator.getRollout(rollout!.rolloutId));
        expect(requeued.status).toBe(R.REQUEUING);
        const wait = msOf(requeued.nextAttemptTime)! - clock.now();
        waits.push(wait);
        clock.advance(wait - 1);
        await coordinator.runWatchdog();
        expect(await coordinator.dequeueFor(`w-${n + 1}`)).toBeUndefined();
        clock.advance(1);
        await coordinator.runWatchdog();
      }
      expect(waits).toEqual([1_000, 2_000, 3_000]);
      const last = (await coordinator.dequeueFor("w-4"))!;
      expect(last.attempt.sequenceId).toBe(4);
      expect(last.rollout.nextAttemptTime).toBeUndefined();
    });

    it("without retry_delay a retry may be dispatched at once", async () => {
      const { coordinator } = await setup();
      await coordinator.enqueue([request({}, retryOnce)]);
      await fail(coordinator, (await coordinator.dequeueFor("w-1"))!.attempt.attemptId);
      expect((await coordinator.dequeueFor("w-1"))?.attempt.sequenceId).toBe(2);
    });
  });

  describe("retry elsewhere (§1)", () => {
    async function twoRunners() {
      const context = await setup();
      const a = new RecordingLink("w-a");
      const b = new RecordingLink("w-b");
      await context.coordinator.openSession(a, OPENING, []);
      await context.coordinator.openSession(b, OPENING, []);
      await context.coordinator.grantCredits(a, 1);
      await context.coordinator.grantCredits(b, 1);
      const [retried, other] = await context.coordinator.enqueue([request({}, retryOnce), request()]);
      expect(a.ofCase("assignment")[0]!.rollout!.rolloutId).toBe(retried!.rolloutId);
      await fail(context.coordinator, a.ofCase("assignment")[0]!.attempt!.attemptId);
      await context.coordinator.grantCredits(a, 1);
      return { ...context, a, b, retried: retried!, other: other! };
    }

    it("a retry does not go back to the worker that failed it while another connected worker could take it", async () => {
      const { coordinator, a, b, retried } = await twoRunners();
      expect(a.ofCase("assignment")).toHaveLength(1);
      expect((await coordinator.getRollout(retried.rolloutId)).status).toBe(R.REQUEUING);
      // b finishes its work and asks again: the retry goes to b.
      await coordinator.report(b.ofCase("assignment")[0]!.attempt!.attemptId, { status: A.SUCCEEDED, errorMessage: "" });
      await coordinator.grantCredits(b, 1);
      expect(b.ofCase("assignment")[1]!.attempt).toMatchObject({ rolloutId: retried.rolloutId, sequenceId: 2, workerId: "w-b" });
    });

    it("after the bound (30 s) it may go back, even while the other keeps asking for work", async () => {
      const { coordinator, clock, a, b, retried } = await twoRunners();
      // b asks (for no slot) within every heartbeat interval: it counts as free soon, but never takes the retry.
      for (let t = 0; t < 29_700; t += 900) {
        clock.advance(900);
        await coordinator.grantCredits(b, 0);
        await coordinator.runWatchdog();
      }
      clock.advance(299);
      await coordinator.grantCredits(b, 0);
      await coordinator.runWatchdog();
      expect(a.ofCase("assignment")).toHaveLength(1);
      clock.advance(1);
      await coordinator.runWatchdog();
      expect(a.ofCase("assignment")[1]!.attempt).toMatchObject({ rolloutId: retried.rolloutId, sequenceId: 2, workerId: "w-a" });
    });

    // Issue 18 §1: only a worker that could take the retry now holds it back; one busy since it last asked for work,
    // longer ago than the heartbeat interval (1 s here), will not have a free slot soon.
    it("once the other worker is busy and has not asked for work within the heartbeat interval, it goes back", async () => {
      const { coordinator, clock, a, retried } = await twoRunners();
      clock.advance(1_000);
      await coordinator.runWatchdog();
      expect(a.ofCase("assignment")).toHaveLength(1);
      clock.advance(1);
      await coordinator.runWatchdog();
      expect(a.ofCase("assignment")[1]!.attempt).toMatchObject({ rolloutId: retried.rolloutId, sequenceId: 2, workerId: "w-a" });
    });

    it("when the other worker leaves, or there never was one, it goes back at once", async () => {
      const { coordinator, a, b, retried } = await twoRunners();
      await coordinator.closeSession(b);
      expect(a.ofCase("assignment")[1]!.attempt).toMatchObject({ rolloutId: retried.rolloutId, sequenceId: 2 });

      const alone = await setup();
      await alone.coordinator.enqueue([request({}, retryOnce)]);
      await fail(alone.coordinator, (await alone.coordinator.dequeueFor("w-1"))!.attempt.attemptId);
      expect((await alone.coordinator.dequeueFor("w-1"))?.attempt.sequenceId).toBe(2);
    });
  });

  describe("quarantine (§1)", () => {
    /** A healthy connected runner: a worker is judged against the rest of the fleet, and a lone one never is. */
    async function withPeer(context: Awaited<ReturnType<typeof setup>>) {
      await context.coordinator.openSession(new RecordingLink("w-peer"), OPENING, []);
    }

    async function failThrice(context: Awaited<ReturnType<typeof setup>>, workerId = "w-bad") {
      await withPeer(context);
      await context.coordinator.enqueue([1, 2, 3, 4].map(() => request()));
      for (let i = 0; i < 3; i++) {
        await fail(context.coordinator, (await context.coordinator.dequeueFor(workerId))!.attempt.attemptId);
        context.clock.advance(10);
      }
    }

    it("three failures in a row within the window quarantine a worker for 30 s; held work is unaffected", async () => {
      const context = await setup();
      const { coordinator, clock } = context;
      await coordinator.enqueue([request()]);
      const held = (await coordinator.dequeueFor("w-bad"))!;
      await failThrice(context);
      const worker = (await coordinator.getWorker("w-bad"));
      expect(msOf(worker.quarantineUntil)).toBe(clock.now() - 10 + 30_000);
      expect(worker.quarantineReason).toMatch(/last 3 attempts all ended FAILED or TIMEOUT/);
      expect(worker.quarantineCount).toBe(1);
      expect(await coordinator.dequeueFor("w-bad")).toBeUndefined();
      expect((await coordinator.dequeueFor("w-good"))?.rollout).toBeDefined();
      // What it held still counts.
      await coordinator.report(held.attempt.attemptId, { status: A.SUCCEEDED, errorMessage: "" });
      expect((await coordinator.getRollout(held.rollout.rolloutId)).status).toBe(R.SUCCEEDED);
      expect((await coordinator.getWorker("w-bad")).quarantineCount).toBe(1);
    });

    it("a quarantined runner's credits wait; when the period ends, it is served again", async () => {
      const context = await setup();
      const { coordinator, clock } = context;
      const link = new RecordingLink("w-bad");
      await coordinator.openSession(link, OPENING, []);
      await failThrice(context);
      await coordinator.grantCredits(link, 1);
      expect(link.ofCase("assignment")).toHaveLength(0);
      clock.advance(30_000);
      await coordinator.runWatchdog();
      expect(link.ofCase("assignment")).toHaveLength(1);
    });

    it("a failure after the period doubles it; a success after the period clears it", async () => {
      const context = await setup();
      const { coordinator, clock } = context;
      await failThrice(context);
      clock.advance(30_000);
      await coordinator.enqueue([request(), request()]);
      await fail(coordinator, (await coordinator.dequeueFor("w-bad"))!.attempt.attemptId);
      expect((await coordinator.getWorker("w-bad"))).toMatchObject({ quarantineCount: 2 });
      expect(msOf((await coordinator.getWorker("w-bad")).quarantineUntil)).toBe(clock.now() + 60_000);
      clock.advance(60_000);
      const next = (await coordinator.dequeueFor("w-bad"))!;
      await coordinator.report(next.attempt.attemptId, { status: A.SUCCEEDED, errorMessage: "" });
      const cleared = (await coordinator.getWorker("w-bad"));
      expect(cleared).toMatchObject({ quarantineCount: 0, quarantineReason: "" });
      expect(cleared.quarantineUntil).toBeUndefined();
    });

    it("failures spread wider than the window, UNRESPONSIVE and cancels do not quarantine", async () => {
      const context = await setup();
      const { coordinator, clock } = context;
      await withPeer(context);
      await coordinator.enqueue([1, 2, 3, 4, 5].map(() => request()));
      for (let i = 0; i < 3; i++) {
        await fail(coordinator, (await coordinator.dequeueFor("w-1"))!.attempt.attemptId);
        clock.advance(31_000);
      }
      expect((await coordinator.getWorker("w-1")).quarantineUntil).toBeUndefined();
      const silent = (await coordinator.dequeueFor("w-1"))!;
      clock.advance(LIVENESS.defaultUnresponsiveMs + 1);
      await coordinator.runWatchdog();
      expect((await coordinator.getAttempt(silent.attempt.attemptId)).status).toBe(A.UNRESPONSIVE);
      const cancelled = (await coordinator.dequeueFor("w-1"))!;
      await coordinator.cancel(cancelled.rollout.rolloutId);
      expect((await coordinator.getWorker("w-1")).quarantineUntil).toBeUndefined();
    });

    it("ReleaseWorker lifts a quarantine at once; NOT_FOUND for an unknown worker, FAILED_PRECONDITION for a free one", async () => {
      const context = await setup();
      const { coordinator } = context;
      await failThrice(context);
      const released = await coordinator.releaseWorker("w-bad");
      expect(released).toMatchObject({ quarantineCount: 0, quarantineReason: "" });
      expect((await coordinator.dequeueFor("w-bad"))?.rollout).toBeDefined();
      expect((await rejection(coordinator.releaseWorker("w-bad"))).kind).toBe("failed_precondition");
      expect((await rejection(coordinator.releaseWorker("w-nobody"))).kind).toBe("not_found");
    });
  });

  describe("timers (§5)", () => {
    it("a timeout fires at its due time, not before", async () => {
      const { coordinator, clock } = await setup();
      await coordinator.enqueue([request({}, { timeout: durationFromMs(1_000) })]);
      const { attempt } = (await coordinator.dequeueFor("w-1"))!;
      await coordinator.report(attempt.attemptId, { status: A.RUNNING, errorMessage: "" });
      clock.advance(1_000);
      await coordinator.runWatchdog();
      expect((await coordinator.getAttempt(attempt.attemptId)).status).toBe(A.RUNNING);
      clock.advance(1);
      await coordinator.runWatchdog();
      expect((await coordinator.getAttempt(attempt.attemptId)).status).toBe(A.TIMEOUT);
    });

    it("a sign of life moves the unresponsive check later instead of being scanned for", async () => {
      const { coordinator, clock } = await setup();
      await coordinator.enqueue([request({}, { unresponsiveTimeout: durationFromMs(1_000) })]);
      const link = new RecordingLink("w-1");
      await coordinator.openSession(link, OPENING, []);
      await coordinator.grantCredits(link, 1);
      const attemptId = link.ofCase("assignment")[0]!.attempt!.attemptId;
      clock.advance(900);
      await coordinator.heartbeat("w-1", {}, [attemptId]);
      clock.advance(900);
      await coordinator.runWatchdog();
      expect((await coordinator.getAttempt(attemptId)).status).toBe(A.RUNNING);
      clock.advance(101);
      await coordinator.runWatchdog();
      expect((await coordinator.getAttempt(attemptId)).status).toBe(A.UNRESPONSIVE);
    });
  });

  describe("truthful history (§6)", () => {
    it("finish_time from the runner becomes end_time, clamped to [start_time, now]", async () => {
      const { coordinator, clock } = await setup();
      await coordinator.enqueue([request(), request(), request()]);
      const results: number[] = [];
      for (const reported of [-500, 400, 99_999]) {
        const { attempt } = (await coordinator.dequeueFor("w-1"))!;
        const started = clock.now();
        await coordinator.report(attempt.attemptId, { status: A.RUNNING, errorMessage: "" });
        clock.advance(1_000);
        const done = await coordinator.report(attempt.attemptId, {
          status: A.SUCCEEDED,
          errorMessage: "",
          finishTime: started + reported,
        });
        results.push(msOf(done.endTime)! - started);
      }
      expect(results).toEqual([0, 400, 1_000]);
    });

    it("a late sign of life on a TIMEOUT attempt is recorded without moving it; version moves only for visible changes", async () => {
      const { coordinator, clock } = await setup();
      await coordinator.enqueue([request({}, { timeout: durationFromMs(100) })]);
      const { attempt } = (await coordinator.dequeueFor("w-1"))!;
      clock.advance(101);
      await coordinator.runWatchdog();
      const timedOut = (await coordinator.getAttempt(attempt.attemptId));
      expect(timedOut.status).toBe(A.TIMEOUT);
      clock.advance(50);
      await coordinator.heartbeat("w-1", {}, [attempt.attemptId]);
      const seen = (await coordinator.getAttempt(attempt.attemptId));
      expect(seen).toMatchObject({ status: A.TIMEOUT, version: timedOut.version });
      expect(msOf(seen.lastHeartbeatTime)).toBe(clock.now());
      clock.advance(50);
      await rejection(coordinator.report(attempt.attemptId, { status: A.UNSPECIFIED, errorMessage: "" }));
      expect((await coordinator.getAttempt(attempt.attemptId))).toMatchObject({ status: A.TIMEOUT, version: timedOut.version });
      expect(msOf((await coordinator.getAttempt(attempt.attemptId)).lastHeartbeatTime)).toBe(clock.now());
      await rejection(coordinator.report(attempt.attemptId, { status: A.SUCCEEDED, errorMessage: "" }));
      expect((await coordinator.getAttempt(attempt.attemptId))).toMatchObject({
        status: A.TIMEOUT,
        lateStatus: A.SUCCEEDED,
        version: timedOut.version + 1n,
      });
    });
  });
});

describe.each(STORES)("issue 8 recovery rules on the %s store", (_, makeStore) => {
  it("the reconnect grace protects only attempts in flight before the restart, not new ones", async () => {
    const store = await makeStore();
    const before = coordinatorOn(store);
    const silence = { unresponsiveTimeout: durationFromMs(1_000) };
    await before.coordinator.enqueue([request({}, silence), request({}, silence)]);
    const inherited = (await before.coordinator.dequeueFor("w-old"))!;
    const { coordinator, clock } = coordinatorOn(store, before.clock);
    await coordinator.recover();
    const fresh = (await coordinator.dequeueFor("w-new"))!;
    clock.advance(1_001);
    await coordinator.runWatchdog();
    expect((await coordinator.getAttempt(fresh.attempt.attemptId)).status).toBe(A.UNRESPONSIVE);
    expect((await coordinator.getAttempt(inherited.attempt.attemptId)).status).toBe(A.PREPARING);
  });

  it("on an empty store there is no grace at all", async () => {
    const { coordinator, clock } = coordinatorOn(await makeStore());
    await coordinator.recover();
    await coordinator.enqueue([request()]);
    const { attempt } = (await coordinator.dequeueFor("w-1"))!;
    clock.advance(LIVENESS.defaultUnresponsiveMs + 1);
    await coordinator.runWatchdog();
    expect((await coordinator.getAttempt(attempt.attemptId)).status).toBe(A.UNRESPONSIVE);
  });

  it("a session that died with the previous process ends when its worker was last heard from", async () => {
    const store = await makeStore();
    const before = coordinatorOn(store);
    const link = new RecordingLink("w-1");
    await before.coordinator.openSession(link, OPENING, []);
    before.clock.advance(700);
    await before.coordinator.heartbeat("w-1", {});
    const heardAt = before.clock.now();
    const { coordinator, clock } = coordinatorOn(store, before.clock);
    clock.advance(60_000);
    await coordinator.recover();
    expect(msOf((await coordinator.getWorker("w-1")).disconnectTime)).toBe(heardAt);
  });

  it("queue order, priorities, labels, retry delays and exclusions survive a restart", async () => {
    const store = await makeStore();
    const before = coordinatorOn(store);
    const rollouts = await before.coordinator.enqueue([
      request({ priority: 1 }, { requiredLabels: { pool: "b" } }),
      request({}, { maxAttempts: 2, retryOn: [A.FAILED], retryDelay: durationFromMs(5_000) }),
      request(),
      request({ priority: 1 }),
    ]);
    const taken = (await before.coordinator.dequeueFor("w-1"))!;
    expect(taken.rollout.rolloutId).toBe(rollouts[3]!.rolloutId);
    const delayed = (await before.coordinator.dequeueFor("w-1"))!;
    expect(delayed.rollout.rolloutId).toBe(rollouts[1]!.rolloutId);
    await fail(before.coordinator, delayed.attempt.attemptId);
    await store.commit();

    const { coordinator, clock } = coordinatorOn(store, before.clock);
    await coordinator.recover();
    const link = new RecordingLink("w-2");
    await coordinator.openSession(link, { ...OPENING, labels: { pool: "b" } }, []);
    await coordinator.grantCredits(link, 4);
    expect(link.ofCase("assignment").map((a) => a.rollout!.rolloutId)).toEqual([rollouts[0]!.rolloutId, rollouts[2]!.rolloutId]);
    clock.advance(5_000);
    await coordinator.runWatchdog();
    expect(link.ofCase("assignment")[2]?.attempt).toMatchObject({ rolloutId: rollouts[1]!.rolloutId, sequenceId: 2 });
  });

  async function fail(coordinator: ReturnType<typeof coordinatorOn>["coordinator"], attemptId: string) {
    await coordinator.report(attemptId, { status: A.FAILED, errorMessage: "exit 1" });
  }
});
