import pg from "pg";
import { afterAll, describe, expect, it, vi } from "vitest";
import type { ReplicaEvent } from "../../src/server/replicas/bus.js";
import { PostgresBus } from "../../src/server/replicas/postgres-bus.js";
import { POSTGRES_AVAILABLE, POSTGRES_URL } from "../postgres.js";
import { eventually } from "../polling.js";

describe.skipIf(!POSTGRES_AVAILABLE)("the replica bus on LISTEN/NOTIFY", () => {
  const buses: PostgresBus[] = [];
  afterAll(async () => {
    await Promise.all(buses.map((bus) => bus.close()));
  });

  it("an enqueued batch of 1,000 rollouts wakes the other replicas with one pg_notify statement, not one per rollout", async () => {
    const tag = `bus-${process.pid}-${Date.now().toString(36)}`;
    const sender = await PostgresBus.open(POSTGRES_URL, `${tag}-a`, () => {});
    const receiver = await PostgresBus.open(POSTGRES_URL, `${tag}-b`, () => {});
    buses.push(sender, receiver);
    const received: ReplicaEvent[] = [];
    // Other tests may share the database and its channel: only this test's ids count.
    receiver.subscribe((event) => {
      if (event.ids.some((id) => id.startsWith(tag))) received.push(event);
    });
    const ids = Array.from({ length: 1000 }, (_, i) => `${tag}-${crypto.randomUUID()}-${i}`);
    const sent: string[] = [];
    const realQuery = pg.Client.prototype.query;
    const counting = vi.spyOn(pg.Client.prototype, "query").mockImplementation(function (this: pg.Client, ...args: unknown[]) {
      const first = args[0];
      sent.push(typeof first === "string" ? first : (first as { text: string }).text);
      return (realQuery as (...a: unknown[]) => unknown).apply(this, args) as never;
    });
    try {
      // As the coordinator does after an enqueue: one "queued" event per rollout, all in one turn.
      for (const id of ids) sender.publish({ kind: "queued", ids: [id] });
      await eventually(
        async () => received.flatMap((event) => event.ids),
        (got) => got.length === ids.length,
        10_000,
      );
    } finally {
      counting.mockRestore();
    }
    expect(sent.filter((text) => text.includes("pg_notify"))).toHaveLength(1);
    expect(new Set(received.flatMap((event) => event.ids))).toEqual(new Set(ids));
    expect(received.every((event) => event.kind === "queued")).toBe(true);
    // Each notification carries up to 7,000 bytes of ids: 1,000 ids of ~60 characters take about nine.
    expect(received.length).toBeLessThanOrEqual(Math.ceil(ids.reduce((n, id) => n + id.length + 3, 0) / 7_000) + 1);
  });
});
