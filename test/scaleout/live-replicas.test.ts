/**
 * Servers sharing a PostgreSQL database learn, from their heartbeats in `replicas`, which of them are alive and hold
 * runner sessions, and their rank among those: the share of the queue each prefers (DispatchQueue's QueueShare).
 */
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { PostgresReplicas } from "../../src/server/replicas/postgres-replicas.js";
import { PostgresStore } from "../../src/server/store/postgres-store.js";
import { eventually } from "../polling.js";
import { freshDatabase, POSTGRES_AVAILABLE } from "../postgres.js";

describe.skipIf(!POSTGRES_AVAILABLE)("live replicas", () => {
  const closers: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const close of closers.reverse()) await close().catch(() => undefined);
  });

  it("each server hears its rank among the live servers holding sessions, and again when that set changes", async () => {
    const url = await freshDatabase("live");
    const store = await PostgresStore.open(url, { poolSize: 2, idleMs: 50 });
    closers.push(() => store.close());
    // A server that died without a word: its row stays, stale, and does not count.
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await admin.query("INSERT INTO replicas (replica_id, started_time, heartbeat_time, sessions) VALUES ('rp-0', 0, 0, 5)");
    await admin.end();

    const heard = new Map<string, { index: number; count: number }>();
    const sessions = new Map<string, number>();
    const replica = async (replicaId: string, holding: number) => {
      sessions.set(replicaId, holding);
      const replicas = new PostgresReplicas({ url, replicaId, heartbeatMs: 50, deadAfterMs: 5_000, now: Date.now, log: () => {} });
      await replicas.start();
      replicas.followLive(
        () => sessions.get(replicaId)!,
        (index, count) => heard.set(replicaId, { index, count }),
      );
      closers.push(() => replicas.close());
      return replicas;
    };
    const all = () => ["rp-a", "rp-b", "rp-c"].map((id) => heard.get(id));

    await replica("rp-b", 1);
    await eventually(async () => heard.get("rp-b"), (b) => b?.count === 1);
    expect(heard.get("rp-b")).toEqual({ index: 0, count: 1 });
    // Ranks follow the ids' order, whichever started first.
    const first = await replica("rp-a", 3);
    await eventually(async () => all(), ([a, b]) => a?.count === 2 && b?.count === 2);
    expect(all().slice(0, 2)).toEqual([
      { index: 0, count: 2 },
      { index: 1, count: 2 },
    ]);

    // A server without runners takes no share (it picks nothing): the others' count stays 2.
    await replica("rp-c", 0);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(all()).toEqual([{ index: 0, count: 2 }, { index: 1, count: 2 }, { index: 0, count: 1 }]);
    // Once it holds sessions, it counts.
    sessions.set("rp-c", 2);
    await eventually(async () => all(), (views) => views.every((v) => v?.count === 3));
    expect(all()).toEqual([0, 1, 2].map((index) => ({ index, count: 3 })));

    await first.close();
    // Each hears it at its own next heartbeat.
    await eventually(async () => all(), ([, b, c]) => b?.count === 2 && c?.count === 2);
    expect([heard.get("rp-b"), heard.get("rp-c")]).toEqual([
      { index: 0, count: 2 },
      { index: 1, count: 2 },
    ]);
  });
});
