/**
 * Two servers sharing one PostgreSQL schema, in one process, with the real LISTEN/NOTIFY bus: rollouts one server
 * claimed leave the other's queue index (the `dequeued` event), so the other does not spend a claim on each before
 * it reaches a live one (in the three-replica bench, a slower replica that did so fell ever further behind the
 * queue's head and starved).
 */
import { create } from "@bufbuild/protobuf";
import { afterAll, describe, expect, it, vi } from "vitest";
import { EnqueueRolloutRequestSchema } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { Coordinator } from "../../src/server/dispatch/coordinator.js";
import { shareOf } from "../../src/server/dispatch/reactions/dispatch-queue.js";
import type { Routing } from "../../src/server/dispatch/reactions/routing.js";
import { systemClock } from "../../src/server/domain/time.js";
import { PostgresBus } from "../../src/server/replicas/postgres-bus.js";
import { PostgresStore } from "../../src/server/store/postgres-store.js";
import { LIVENESS, OPENING, RecordingLink } from "../harness.js";
import { eventually } from "../polling.js";
import { freshSchema, POSTGRES_AVAILABLE, POSTGRES_URL } from "../postgres.js";

describe.skipIf(!POSTGRES_AVAILABLE)("servers racing for the same queue heads", () => {
  const closers: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const close of closers.reverse()) await close().catch(() => undefined);
  });

  async function server(schema: string, replicaId: string) {
    const store = await PostgresStore.open(POSTGRES_URL, { schema, poolSize: 3, idleMs: 50, telemetryFlushMs: 100, replicaId });
    const bus = await PostgresBus.open(POSTGRES_URL, replicaId, () => {});
    closers.push(() => store.close(), () => bus.close());
    const coordinator = new Coordinator({ store, clock: systemClock, ...LIVENESS, bus });
    const routing = () => (coordinator as unknown as { routing: Routing }).routing;
    const indexSize = () => routing().size;
    return { store, coordinator, indexSize, routing };
  }

  it("drops the rollouts another server claimed from its index, and claims a live rollout first time", async () => {
    const schema = freshSchema("race");
    const tag = `${process.pid}-${Date.now().toString(36)}`;
    const a = await server(schema, `ra-${tag}`);
    const b = await server(schema, `rb-${tag}`);
    const linkA = new RecordingLink(`wa-${tag}`);
    const linkB = new RecordingLink(`wb-${tag}`);
    await a.coordinator.openSession(linkA, { ...OPENING, capacity: 50 }, []);
    await b.coordinator.openSession(linkB, OPENING, []);

    // Enqueued on A while nobody waits: A announces all 60, and B indexes them.
    const ids = Array.from({ length: 60 }, (_, i) => `race-${tag}-${String(i).padStart(2, "0")}`);
    await a.coordinator.enqueue(ids.map((rolloutId) => create(EnqueueRolloutRequestSchema, { rolloutId })));
    await eventually(async () => b.indexSize(), (size) => size === 60);

    // A takes the first 50, and says so: they leave B's index (this test starts no timers, so no periodic resync does it).
    await a.coordinator.grantCredits(linkA, 50);
    expect(linkA.ofCase("assignment").map((x) => x.rollout!.rolloutId)).toEqual(ids.slice(0, 50));
    await eventually(async () => b.indexSize(), (size) => size === 10, 2_000);

    const claims = vi.spyOn(b.store, "claimRollouts");
    await b.coordinator.grantCredits(linkB, 1);
    const [assignment] = await eventually(async () => linkB.ofCase("assignment"), (sent) => sent.length === 1);
    // The oldest live rollout, in one claim (without the event, B claimed its way through the 50 A took: 51 claims).
    expect(assignment!.rollout!.rolloutId).toBe(ids[50]);
    expect(claims.mock.calls.length).toBe(1);
    expect(b.indexSize()).toBe(9);
  });

  it("servers that contend for the queue claim within their shares: few picks are lost to the other", async () => {
    const schema = freshSchema("share");
    const tag = `${process.pid}-${Date.now().toString(36)}`;
    const a = await server(schema, `sa-${tag}`);
    const b = await server(schema, `sb-${tag}`);
    a.coordinator.shareQueue(0, 2);
    b.coordinator.shareQueue(1, 2);
    const linkA = new RecordingLink(`wa-${tag}`);
    const linkB = new RecordingLink(`wb-${tag}`);
    await a.coordinator.openSession(linkA, { ...OPENING, capacity: 10 }, []);
    await b.coordinator.openSession(linkB, { ...OPENING, capacity: 10 }, []);

    const ids = Array.from({ length: 60 }, (_, i) => `share-${tag}-${String(i).padStart(2, "0")}`);
    await a.coordinator.enqueue(ids.map((rolloutId) => create(EnqueueRolloutRequestSchema, { rolloutId })));
    await eventually(async () => b.indexSize(), (size) => size === 60);
    // Enough of each share for ten picks apiece.
    expect(Math.min(...[0, 1].map((share) => ids.filter((id) => shareOf(id, 2) === share).length))).toBeGreaterThanOrEqual(12);

    // A takes one rollout, having heard no other server claim: the oldest (exact FIFO while nobody contends).
    await a.coordinator.grantCredits(linkA, 1);
    await eventually(async () => b.indexSize(), (size) => size === 59);
    expect(linkA.ofCase("assignment").map((x) => x.rollout!.rolloutId)).toEqual([ids[0]]);
    // B heard A claim, so it contends now; A would as soon as B claims. Both are marked contending here, as the
    // event does, so that a pause of this machine longer than the event's 250 ms cannot let it lapse mid-test.
    for (const side of [a, b]) side.routing().othersClaimed(Date.now());
    const claimsA = vi.spyOn(a.store, "claimRollouts");
    const claimsB = vi.spyOn(b.store, "claimRollouts");
    // Both servers hand out credits at once, each from its own index of the same 59 rollouts.
    await Promise.all([a.coordinator.grantCredits(linkA, 9), b.coordinator.grantCredits(linkB, 10)]);
    const assigned = () => [...linkA.ofCase("assignment"), ...linkB.ofCase("assignment")].map((x) => x.rollout!.rolloutId);
    await eventually(async () => assigned().length, (n) => n === 20);
    expect(new Set(assigned()).size).toBe(20);
    // Picks a claim found taken by the other server (without shares, both pick the same oldest, and one server loses
    // nine or more).
    const spies = [claimsA, claimsB];
    const asked = spies.flatMap((spy) => spy.mock.calls.map(([request]) => request.rolloutIds.length));
    const got = await Promise.all(spies.flatMap((spy) => spy.mock.results.map(async (result) => (await result.value).claimed.length)));
    const lost = asked.reduce((x, y) => x + y, 0) - got.reduce((x, y) => x + y, 0);
    expect(lost).toBeLessThanOrEqual(1);
  });
});
