import { statSync } from "node:fs";
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { EnqueueRolloutRequestSchema, RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { WorkerStatus } from "../../src/gen/runnerline/v1/worker_pb.js";
import { Coordinator } from "../../src/server/dispatch/coordinator.js";
import { allObservers } from "../../src/server/dispatch/transition-observer.js";
import { FleetCounters } from "../../src/server/fleet/fleet-counters.js";
import { Retention } from "../../src/server/fleet/retention.js";
import { MemoryStore } from "../../src/server/store/memory-store.js";
import { SqliteStore } from "../../src/server/store/sqlite-store.js";
import type { Store } from "../../src/server/store/store.js";
import { LIVENESS, ManualClock, OPENING, RecordingLink, STORES, tempDatabasePath } from "../harness.js";

const DAY = 86_400_000;
const everything = { orderBy: [{ field: "rollout_id", descending: false }], offset: 0, limit: Number.MAX_SAFE_INTEGER };

/** One store's server parts, wired as app.ts wires them. */
async function serverOn(store: Store, clock: ManualClock, retainMs: number) {
  const fleet = new FleetCounters(clock);
  await fleet.seed(store);
  const observer = allObservers(fleet);
  const coordinator = new Coordinator({ store, clock, ...LIVENESS, observer });
  const retention = new Retention({ store, clock, retainMs, observer, batchSize: 25 });
  return { fleet, coordinator, retention };
}

/** A day of steady work: `count` rollouts run by a unary puller, and one runner session that comes and leaves. */
async function oneDay(coordinator: Coordinator, day: number, count: number) {
  const requests = Array.from({ length: count }, (_, i) => create(EnqueueRolloutRequestSchema, { rolloutId: `d${day}-${i}` }));
  await coordinator.enqueue(requests);
  for (let i = 0; i < count; i++) {
    const assigned = await coordinator.dequeueFor("puller");
    await coordinator.report(assigned!.attempt.attemptId, { status: AttemptStatus.SUCCEEDED, errorMessage: "" });
  }
  const link = new RecordingLink(`visitor-${day}`);
  await coordinator.openSession(link, OPENING, []);
  coordinator.goodbye(link);
  await coordinator.closeSession(link);
}

describe("retention", () => {
  it("keeps the SQLite file from growing under a steady workload (and it would grow without)", async () => {
    const sizes = async (retainMs: number, days: number) => {
      const path = tempDatabasePath();
      const clock = new ManualClock();
      const measured: number[] = [];
      for (let day = 0; day < days; day++) {
        // A restart a day: closing checkpoints the WAL into the file, so its size is what is kept.
        const store = SqliteStore.open(path, { synchronous: "normal" });
        const { coordinator, retention } = await serverOn(store, clock, retainMs);
        await coordinator.recover();
        await oneDay(coordinator, day, 200);
        clock.advance(DAY);
        await retention.sweep();
        await store.close();
        measured.push(statSync(path).size);
      }
      return measured;
    };
    const kept = await sizes(2 * DAY, 12);
    // After retention starts removing (day 3 on), the file stops growing: freed pages are reused.
    expect(Math.max(...kept.slice(4))).toBeLessThanOrEqual(kept[3]! * 1.1);
    const unbounded = await sizes(365 * DAY, 12);
    expect(unbounded[11]!).toBeGreaterThan(unbounded[3]! * 2);
  }, 60_000);

  describe.each(STORES)("on the %s store", (_, makeStore) => {
    it("removes finished rollouts with their attempts and OFFLINE workers after --retain, in batches, and the counters follow", async () => {
      const store = await makeStore();
      const clock = new ManualClock();
      const { coordinator, retention, fleet } = await serverOn(store, clock, 2 * DAY);
      await oneDay(coordinator, 0, 60);
      clock.advance(DAY);
      await oneDay(coordinator, 1, 10);
      await coordinator.enqueue([create(EnqueueRolloutRequestSchema, { rolloutId: "still-queued" })]);
      clock.advance(DAY + 1);

      expect(await retention.sweep()).toEqual({ rollouts: 60, workers: 1 });
      const left = (await store.listRollouts({ filter: { statuses: [], idContains: "" }, ...everything })).items.map((r) => r.rolloutId);
      expect(left).toHaveLength(11);
      expect(left.every((id) => id.startsWith("d1-") || id === "still-queued")).toBe(true);
      expect((await store.listAttempts({ filter: { rolloutId: "", workerId: "", statuses: [] }, ...everything })).total).toBe(10);
      expect((await store.getAttempt("nothing"))).toBeUndefined();
      expect((await store.getWorker("visitor-0"))).toBeUndefined();
      expect((await store.getWorker("visitor-1"))?.worker.status).toBe(WorkerStatus.OFFLINE);
      expect((await store.getWorker("puller"))).toBeDefined(); // not OFFLINE: kept
      const summary = fleet.summary();
      expect(summary.rollouts).toMatchObject({ total: 11, succeeded: 10, queuing: 1 });
      expect(summary.workers).toMatchObject({ total: 2, offline: 1 });
      expect(summary.queueDepth).toBe(1);

      // A queued rollout is never removed, however old.
      clock.advance(30 * DAY);
      await retention.sweep();
      expect((await store.getRollout("still-queued"))?.status).toBe(RolloutStatus.QUEUING);
      expect((await store.queueLength())).toBe(1);
      await store.close();
    });

    it("DeleteWorker removes an OFFLINE or UNKNOWN worker without a session, and refuses others", async () => {
      const store = await makeStore();
      const clock = new ManualClock();
      const { coordinator, retention, fleet } = await serverOn(store, clock, DAY);
      const attached = new RecordingLink("attached");
      await coordinator.openSession(attached, OPENING, []);
      const lost = new RecordingLink("lost");
      await coordinator.openSession(lost, OPENING, []);
      await coordinator.closeSession(lost);
      expect((await store.getWorker("lost"))?.worker.status).toBe(WorkerStatus.UNKNOWN);

      await expect(retention.deleteWorker("attached")).rejects.toMatchObject({ kind: "failed_precondition" });
      await expect(retention.deleteWorker("nobody")).rejects.toMatchObject({ kind: "not_found" });
      await retention.deleteWorker("lost");
      expect((await store.getWorker("lost"))).toBeUndefined();
      expect(fleet.summary().workers).toMatchObject({ total: 1, unknown: 0, idle: 1 });
      // It can come back: a new session makes a new worker.
      await coordinator.openSession(new RecordingLink("lost"), OPENING, []);
      expect((await store.getWorker("lost"))?.worker.status).toBe(WorkerStatus.IDLE);
      await store.close();
    });
  });

  it("counts what a store already holds at start", async () => {
    const store = new MemoryStore();
    const clock = new ManualClock();
    const first = await serverOn(store, clock, DAY);
    await oneDay(first.coordinator, 0, 5);
    await first.coordinator.enqueue([create(EnqueueRolloutRequestSchema, { rolloutId: "waiting" })]);
    clock.advance(1_000);
    const second = await serverOn(store, clock, DAY);
    expect(second.fleet.summary()).toMatchObject({ ...first.fleet.summary(), $typeName: "runnerline.v1.FleetSummary" });
    expect(Number(second.fleet.summary().oldestQueuedAge?.seconds)).toBe(1);
  });
});
