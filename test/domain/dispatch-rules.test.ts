import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { AttemptErrorKind, AttemptErrorSchema, AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutConfigSchema, RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { WorkerStatus } from "../../src/gen/runnerline/v1/worker_pb.js";
import { finishMs, recordLateReport, recordLateSignOfLife, watchdogDue, watchdogVerdict } from "../../src/server/domain/attempt.js";
import { labelProblem, labelSetKey, labelsMatch } from "../../src/server/domain/labels.js";
import {
  DEFAULT_QUARANTINE_POLICY,
  NO_OUTCOMES,
  nextFailureStreak,
  quarantineDecision,
  successClearsQuarantine,
  workerOutcome,
} from "../../src/server/domain/quarantine.js";
import { followAttempt, retryDelayMs, rolloutExpiry, rolloutExpiryDue } from "../../src/server/domain/rollout.js";
import { msOf, toTimestamp } from "../../src/server/domain/time.js";
import { latenessDue, newWorkerRecord } from "../../src/server/domain/worker.js";
import { DispatchQueue, type QueueEntry, shareOf } from "../../src/server/dispatch/reactions/dispatch-queue.js";
import { DueTimers } from "../../src/server/dispatch/timers/due-timers.js";
import { attemptFixture, rolloutFixture, T0 } from "../fixtures.js";

const A = AttemptStatus;

describe("labels", () => {
  it("match when the worker carries every required pair exactly", () => {
    expect(labelsMatch({}, {})).toBe(true);
    expect(labelsMatch({ gpu: "h100" }, { gpu: "h100", zone: "a" })).toBe(true);
    expect(labelsMatch({ gpu: "h100" }, { gpu: "a100" })).toBe(false);
    expect(labelsMatch({ gpu: "h100", zone: "a" }, { gpu: "h100" })).toBe(false);
  });

  it("one key per label set, whatever the order of its pairs", () => {
    expect(labelSetKey({ a: "1", b: "2" })).toBe(labelSetKey({ b: "2", a: "1" }));
    expect(labelSetKey({ a: "1" })).not.toBe(labelSetKey({ a: "2" }));
    expect(labelSetKey({})).toBe("");
  });

  it("bad keys and overlong values are named", () => {
    expect(labelProblem("config.required_labels", { "gpu.type/v1": "x" })).toBeUndefined();
    expect(labelProblem("config.required_labels", { "": "x" })).toMatch(/config.required_labels key ""/);
    expect(labelProblem("config.required_labels", { "has space": "x" })).toMatch(/key "has space"/);
    expect(labelProblem("config.required_labels", { k: "v".repeat(257) })).toMatch(/required_labels\[k\] is longer than 256/);
  });
});

describe("retry delay (Temporal's retry interval)", () => {
  const config = (fields: Parameters<typeof create<typeof RolloutConfigSchema>>[1]) => create(RolloutConfigSchema, fields);

  it("is 0 when unset, grows by the coefficient (default 2) and stops at max_retry_delay", () => {
    expect(retryDelayMs(config({}), 3)).toBe(0);
    const doubling = config({ retryDelay: durationFromMs(100) });
    expect([1, 2, 3, 4].map((n) => retryDelayMs(doubling, n))).toEqual([100, 200, 400, 800]);
    const capped = config({ retryDelay: durationFromMs(100), retryBackoffCoefficient: 3, maxRetryDelay: durationFromMs(500) });
    expect([1, 2, 3].map((n) => retryDelayMs(capped, n))).toEqual([100, 300, 500]);
    expect(retryDelayMs(config({ retryDelay: durationFromMs(100), retryBackoffCoefficient: 1 }), 5)).toBe(100);
  });

  it("a requeue records next_attempt_time; a requeue without delay does not", () => {
    const failed = attemptFixture({ status: A.FAILED });
    const rollout = rolloutFixture({}, { maxAttempts: 3, retryOn: [A.FAILED] });
    expect(followAttempt(rollout, failed, T0 + 10).nextAttemptTime).toBeUndefined();
    const delayed = { ...rollout, config: { ...rollout.config!, retryDelay: durationFromMs(250) } };
    const requeued = followAttempt(delayed, failed, T0 + 10);
    expect(requeued.status).toBe(RolloutStatus.REQUEUING);
    expect(msOf(requeued.nextAttemptTime)).toBe(T0 + 260);
  });
});

describe("due times of the time-driven checks", () => {
  it("an attempt is due at the earlier of its timeout and its silence, one ms past (strict comparisons)", () => {
    const rollout = rolloutFixture({}, { timeoutMs: 1_000, unresponsiveMs: 5_000 });
    const attempt = attemptFixture({ status: A.RUNNING, startTime: toTimestamp(T0), lastHeartbeatTime: toTimestamp(T0) });
    const due = watchdogDue(attempt, rollout, 3_000)!;
    expect(due).toBe(T0 + 1_001);
    expect(watchdogVerdict(attempt, rollout, 3_000, due - 1)).toBeUndefined();
    expect(watchdogVerdict(attempt, rollout, 3_000, due)?.status).toBe(A.TIMEOUT);
    const silentOnly = rolloutFixture({}, { unresponsiveMs: 2_000 });
    expect(watchdogDue(attempt, silentOnly, 3_000)).toBe(T0 + 2_001);
    expect(watchdogDue({ ...attempt, status: A.SUCCEEDED }, rollout, 3_000)).toBeUndefined();
  });

  it("a rollout's deadline and queue_timeout due times agree with rolloutExpiry", () => {
    const queued = rolloutFixture({
      status: RolloutStatus.QUEUING,
      attemptCount: 0,
      config: create(RolloutConfigSchema, { deadline: durationFromMs(5_000), queueTimeout: durationFromMs(2_000) }),
    });
    expect(rolloutExpiryDue(queued)).toBe(T0 + 2_001);
    expect(rolloutExpiry(queued, T0 + 2_000)).toBeUndefined();
    expect(rolloutExpiry(queued, T0 + 2_001)).toMatch(/queue_timeout/);
    expect(rolloutExpiryDue({ ...queued, attemptCount: 1 })).toBe(T0 + 5_001);
    expect(rolloutExpiryDue({ ...queued, status: RolloutStatus.SUCCEEDED })).toBeUndefined();
    expect(rolloutExpiryDue(rolloutFixture())).toBeUndefined();
  });

  it("a worker's lateness is due one grace after it was last heard from, only while IDLE or BUSY", () => {
    const liveness = { heartbeatGraceMs: 3_000 };
    const record = newWorkerRecord("w-1", T0);
    const open = {
      ...record,
      attachment: "open" as const,
      worker: { ...record.worker, status: WorkerStatus.IDLE, connectTime: toTimestamp(T0), lastHeartbeatTime: toTimestamp(T0 + 500) },
    };
    expect(latenessDue(open, liveness)).toBe(T0 + 3_501);
    expect(latenessDue({ ...open, worker: { ...open.worker, status: WorkerStatus.UNKNOWN } }, liveness)).toBeUndefined();
    expect(latenessDue({ ...open, attachment: "lost" }, liveness)).toBeUndefined();
  });
});

describe("what the runner reports, and when it is late", () => {
  it("finish_time is clamped to [start_time, now]", () => {
    const attempt = attemptFixture({ startTime: toTimestamp(T0 + 100) });
    expect(finishMs(attempt, T0 + 1_000, undefined)).toBe(T0 + 1_000);
    expect(finishMs(attempt, T0 + 1_000, T0 + 400)).toBe(T0 + 400);
    expect(finishMs(attempt, T0 + 1_000, T0)).toBe(T0 + 100);
    expect(finishMs(attempt, T0 + 1_000, T0 + 5_000)).toBe(T0 + 1_000);
  });

  it("a late sign of life moves last_heartbeat_time only; a late outcome or metadata moves the version", () => {
    const ended = attemptFixture({ status: A.TIMEOUT, endTime: toTimestamp(T0 + 10), version: 3n });
    const seen = recordLateSignOfLife(ended, T0 + 50);
    expect(seen).toMatchObject({ status: A.TIMEOUT, version: 3n });
    expect(msOf(seen.lastHeartbeatTime)).toBe(T0 + 50);
    expect(recordLateSignOfLife(seen, T0 + 40)).toBe(seen);
    const finishedByRunner = attemptFixture({ status: A.SUCCEEDED, endTime: toTimestamp(T0 + 10) });
    expect(recordLateSignOfLife(finishedByRunner, T0 + 50)).toBe(finishedByRunner);
    expect(recordLateReport(ended, { status: A.UNSPECIFIED, errorMessage: "" }, T0 + 60).version).toBe(3n);
    expect(recordLateReport(ended, { status: A.UNSPECIFIED, errorMessage: "", metadata: { step: 1 } }, T0 + 60).version).toBe(4n);
    expect(recordLateReport(ended, { status: A.FAILED, errorMessage: "x" }, T0 + 60)).toMatchObject({ version: 4n, lateStatus: A.FAILED });
  });
});

describe("quarantine", () => {
  const policy = DEFAULT_QUARANTINE_POLICY;
  const worker = newWorkerRecord("w-1", T0).worker;
  const failed = (kind: AttemptErrorKind) =>
    attemptFixture({ status: A.FAILED, error: create(AttemptErrorSchema, { kind, message: "x" }) });

  it("reported failures and timeouts count against a worker; cancels, deadlines and UNRESPONSIVE do not", () => {
    expect(workerOutcome(failed(AttemptErrorKind.REPORTED))).toBe("failure");
    expect(workerOutcome(attemptFixture({ status: A.TIMEOUT }))).toBe("failure");
    expect(workerOutcome(attemptFixture({ status: A.SUCCEEDED }))).toBe("success");
    expect(workerOutcome(failed(AttemptErrorKind.CANCELLED))).toBe("neutral");
    expect(workerOutcome(failed(AttemptErrorKind.DEADLINE_EXCEEDED))).toBe("neutral");
    expect(workerOutcome(attemptFixture({ status: A.UNRESPONSIVE }))).toBe("neutral");
  });

  it("the streak keeps the latest failures in a row; a success empties it", () => {
    let streak = nextFailureStreak([], "failure", T0, policy);
    streak = nextFailureStreak(streak, "neutral", T0 + 1, policy);
    streak = nextFailureStreak(streak, "failure", T0 + 2, policy);
    expect(streak).toEqual([T0, T0 + 2]);
    expect(nextFailureStreak([T0, T0 + 1, T0 + 2], "failure", T0 + 3, policy)).toEqual([T0 + 1, T0 + 2, T0 + 3]);
    expect(nextFailureStreak(streak, "success", T0 + 3, policy)).toEqual([]);
  });

  // A worker failing everything while the rest of the fleet fails nothing (fleet comparisons: test/domain/quarantine.test.ts).
  const outlier = { own: { successes: 0, failures: 3, succeededElsewhere: 0 }, rest: NO_OUTCOMES, restMedianShare: 0, comparable: 3, others: 3 };

  it("N failures within the window quarantine for the back-off; on probation one more doubles it, up to the maximum", () => {
    expect(quarantineDecision(worker, [T0, T0 + 1], policy, T0 + 2, "last", outlier)).toBeUndefined();
    expect(quarantineDecision(worker, [T0, T0 + 1, T0 + 61_000], policy, T0 + 61_000, "last", outlier)).toBeUndefined();
    const first = quarantineDecision(worker, [T0, T0 + 1, T0 + 2], policy, T0 + 2, "at-9 FAILED: boom", outlier)!;
    expect(first).toMatchObject({ until: T0 + 2 + 30_000, count: 1 });
    expect(first.reason).toMatch(/last 3 attempts all ended FAILED or TIMEOUT within 0.0 s, and it failed 100 % of its attempts in the window, the typical other worker 0 %; last: at-9 FAILED: boom/);
    const quarantined = { ...worker, quarantineUntil: toTimestamp(first.until), quarantineCount: 1 };
    expect(quarantineDecision(quarantined, [T0 + 5], policy, T0 + 5, "x", outlier)).toBeUndefined();
    const later = first.until + 1;
    expect(quarantineDecision(quarantined, [later], policy, later, "x", outlier)).toMatchObject({ until: later + 60_000, count: 2 });
    const often = { ...quarantined, quarantineCount: 7 };
    expect(quarantineDecision(often, [later], policy, later, "x", outlier)).toMatchObject({ until: later + 600_000, count: 8 });
  });

  it("only a success after the period clears it", () => {
    const quarantined = { ...worker, quarantineUntil: toTimestamp(T0 + 1_000), quarantineCount: 1 };
    expect(successClearsQuarantine(quarantined, "success", T0 + 500)).toBe(false);
    expect(successClearsQuarantine(quarantined, "success", T0 + 1_000)).toBe(true);
    expect(successClearsQuarantine(quarantined, "failure", T0 + 1_000)).toBe(false);
    expect(successClearsQuarantine(worker, "success", T0)).toBe(false);
  });
});

describe("DueTimers", () => {
  it("hands out what is due earliest first, once, honouring reschedules and cancels", () => {
    const timers = new DueTimers<"a" | "b">();
    const earlier: number[] = [];
    timers.onEarlier = (due) => earlier.push(due);
    timers.schedule("a", "x", 30);
    timers.schedule("a", "y", 10);
    timers.schedule("b", "x", 20);
    timers.schedule("a", "x", 5);
    timers.cancel("b", "x");
    timers.scheduleNoLaterThan("a", "y", 50);
    expect(earlier).toEqual([30, 10, 5]);
    expect(timers.peek()).toBe(5);
    expect(timers.takeDue(9)).toEqual([{ kind: "a", id: "x" }]);
    expect(timers.takeDue(100)).toEqual([{ kind: "a", id: "y" }]);
    expect(timers.takeDue(100)).toEqual([]);
    expect(timers.size).toBe(0);
  });

  it("stays ordered over many random due times", () => {
    const timers = new DueTimers();
    const dues = Array.from({ length: 500 }, (_, i) => ({ id: `k${i}`, due: (i * 7919) % 1000 }));
    for (const { id, due } of dues) timers.schedule("k", id, due);
    const taken = timers.takeDue(1_000).map(({ id }) => dues.find((d) => d.id === id)!.due);
    expect(taken).toEqual([...taken].sort((a, b) => a - b));
    expect(taken).toHaveLength(500);
  });
});

describe("DispatchQueue", () => {
  const entry = (rolloutId: string, fields: Partial<QueueEntry> = {}): QueueEntry => ({
    rolloutId,
    priority: 0,
    requiredLabels: {},
    ranOn: new Set(),
    avoidUntil: 0,
    ...fields,
  });
  const taker = (labels: Record<string, string> = {}, workerId = "w-1", mayRetake = false) => ({
    workerId,
    labels,
    mayRetake: () => mayRetake,
  });

  it("picks by priority, then FIFO across the lanes the worker may serve", () => {
    const queue = new DispatchQueue();
    queue.add(entry("a"));
    queue.add(entry("b", { requiredLabels: { gpu: "1" } }));
    queue.add(entry("c", { priority: 2, requiredLabels: { gpu: "2" } }));
    queue.add(entry("d"));
    expect(queue.pick(taker({ gpu: "1" }))?.rolloutId).toBe("a");
    queue.remove("a");
    expect(queue.pick(taker({ gpu: "1" }))?.rolloutId).toBe("b");
    expect(queue.pick(taker({ gpu: "2" }))?.rolloutId).toBe("c");
    expect(queue.pick(taker())?.rolloutId).toBe("d");
    queue.add(entry("b", { requiredLabels: { gpu: "1" } })); // re-adding moves it to the back
    expect(queue.pick(taker({ gpu: "1" }))?.rolloutId).toBe("d");
  });

  it("skips entries the worker already ran unless it may retake them", () => {
    const queue = new DispatchQueue();
    queue.add(entry("retry", { ranOn: new Set(["w-1"]) }));
    queue.add(entry("fresh"));
    expect(queue.pick(taker({}, "w-1"))?.rolloutId).toBe("fresh");
    expect(queue.pick(taker({}, "w-1", true))?.rolloutId).toBe("retry");
    expect(queue.pick(taker({}, "w-2"))?.rolloutId).toBe("retry");
    queue.remove("fresh");
    expect(queue.pick(taker({}, "w-1"))).toBeUndefined();
  });

  it("drops empty lanes, so picking costs the label sets in use, not those ever seen", () => {
    const queue = new DispatchQueue();
    for (let i = 0; i < 20; i++) queue.add(entry(`r${i}`, { requiredLabels: { set: String(i) } }));
    expect([...queue.lanes()]).toHaveLength(20);
    for (let i = 0; i < 20; i++) queue.remove(`r${i}`);
    expect([...queue.lanes()]).toHaveLength(0);
    expect(queue.size).toBe(0);
  });
  it("with enqueue times (servers sharing a store), a late arrival takes its place; same-millisecond ones keep arrival order", () => {
    const queue = new DispatchQueue();
    queue.add(entry("low-0", { enqueuedAt: 1_000 }));
    queue.add(entry("low-2", { enqueuedAt: 1_020 }));
    // Learned from another server after low-2, though enqueued before it.
    queue.add(entry("low-1", { enqueuedAt: 1_010 }));
    queue.add(entry("low-3", { enqueuedAt: 1_020 }));
    queue.add(entry("high", { enqueuedAt: 1_030, priority: 5 }));
    const taken: string[] = [];
    for (let next = queue.pick(taker({}, "w-1", true)); next !== undefined; next = queue.pick(taker({}, "w-1", true))) {
      taken.push(next.rolloutId);
      queue.remove(next.rolloutId);
    }
    expect(taken).toEqual(["high", "low-0", "low-1", "low-2", "low-3"]);
  });

  it("with enqueue times, order holds across lanes of one priority, with entries removed from the middle", () => {
    const queue = new DispatchQueue();
    queue.add(entry("gpu-late", { enqueuedAt: 30, requiredLabels: { gpu: "1" } }));
    queue.add(entry("any-early", { enqueuedAt: 10 }));
    queue.add(entry("gpu-early", { enqueuedAt: 5, requiredLabels: { gpu: "1" } }));
    queue.add(entry("any-gone", { enqueuedAt: 20 }));
    queue.remove("any-gone");
    const taken: string[] = [];
    for (let next = queue.pick(taker({ gpu: "1" }, "w-1", true)); next !== undefined; next = queue.pick(taker({ gpu: "1" }, "w-1", true))) {
      taken.push(next.rolloutId);
      queue.remove(next.rolloutId);
    }
    expect(taken).toEqual(["gpu-early", "any-early", "gpu-late"]);
  });

  /** Ids in server `share`'s share among `count`, and in the others', from one sequence. */
  const idsByShare = (count: number, share: number, length: number) => {
    const ids = Array.from({ length }, (_, i) => `ro-${i}`);
    return { ids, mine: ids.filter((id) => shareOf(id, count) === share), theirs: ids.filter((id) => shareOf(id, count) !== share) };
  };

  it("a pick looks through `reach` × servers entries outside the server's share for one inside it, else takes the oldest", () => {
    const { mine, theirs } = idsByShare(3, 1, 40);
    const queue = new DispatchQueue();
    queue.setShare({ index: 1, count: 3 });
    for (const id of [theirs[0]!, theirs[1]!, theirs[2]!, mine[0]!, theirs[3]!]) queue.add(entry(id));
    expect(queue.pick(taker(), 0)?.rolloutId).toBe(theirs[0]);
    // Reach 1 per server (3): three of theirs come first, so the oldest it is.
    expect(queue.pick(taker(), 1)?.rolloutId).toBe(theirs[0]);
    // Reach 2 per server (6): its own is found behind them.
    expect(queue.pick(taker(), 2)?.rolloutId).toBe(mine[0]);
    // Alone, picks are FIFO whatever the reach.
    const alone = new DispatchQueue();
    for (const id of [theirs[0]!, mine[0]!]) alone.add(entry(id));
    expect(alone.pick(taker(), 50)?.rolloutId).toBe(theirs[0]);
  });

  it("three servers' passes over one queue: with shares they claim nearly disjoint rollouts, without they collide", () => {
    const { ids } = idsByShare(3, 0, 600);
    /** Rounds of 30 picks per server on its own index of the same queue (as Routing reaches); how many collided. */
    const collisions = (shared: boolean) => {
      const queues = [0, 1, 2].map((index) => {
        const queue = new DispatchQueue();
        if (shared) queue.setShare({ index, count: 3 });
        for (const id of ids) queue.add(entry(id));
        return queue;
      });
      let collided = 0;
      for (let round = 0; round < 5; round++) {
        const picked = queues.map((queue) => {
          const taken: string[] = [];
          for (let k = 0; k < 30; k++) {
            const next = queue.pick(taker(), Math.max(64, k + 1))!;
            taken.push(next.rolloutId);
            queue.remove(next.rolloutId);
          }
          return taken;
        });
        const all = picked.flat();
        collided += all.length - new Set(all).size;
        // What any server took leaves every index (the dequeued event).
        for (const queue of queues) for (const id of all) queue.remove(id);
      }
      return collided;
    };
    expect(collisions(false)).toBe(5 * 60);
    expect(collisions(true)).toBe(0);
  });

  it("across lanes, a rollout of the share beats an older one outside it; within the share, the oldest wins", () => {
    const { mine, theirs } = idsByShare(2, 0, 40);
    const queue = new DispatchQueue();
    queue.setShare({ index: 0, count: 2 });
    queue.add(entry(theirs[0]!, { enqueuedAt: 1 }));
    queue.add(entry(mine[1]!, { enqueuedAt: 3, requiredLabels: { gpu: "1" } }));
    queue.add(entry(mine[0]!, { enqueuedAt: 2, requiredLabels: { zone: "a" } }));
    const both = taker({ gpu: "1", zone: "a" });
    const order: string[] = [];
    for (let next = queue.pick(both, 10); next !== undefined; next = queue.pick(both, 10)) {
      order.push(next.rolloutId);
      queue.remove(next.rolloutId);
    }
    expect(order).toEqual([mine[0], mine[1], theirs[0]]);
  });

  it("refuses a share that is not a rank among its count", () => {
    const queue = new DispatchQueue();
    expect(() => queue.setShare({ index: 2, count: 2 })).toThrow(/invalid queue share 2 of 2/);
    expect(() => queue.setShare({ index: 0, count: 0 })).toThrow(/invalid queue share/);
    expect(() => queue.setShare({ index: -1, count: 3 })).toThrow(/invalid queue share/);
  });
});
