/**
 * Servers sharing a PostgreSQL database learn, from their heartbeats in `replicas`, which of them are alive and
 * their rank among them: the share of the queue each prefers (DispatchQueue's QueueShare).
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

  it("each server hears its rank among the live servers and their number, and again when one leaves", async () => {
    const url = await freshDatabase("live");
    const store = await PostgresStore.open(url, { poolSize: 2, idleMs: 50 });
    closers.push(() => store.close());
    const heard = new Map<string, { index: number; count: number }>();
    const replica = async (replicaId: string) => {
      const replicas = new PostgresReplicas({ url, replicaId, heartbeatMs: 50, deadAfterMs: 1_000, now: Date.now, log: () => {} });
      await replicas.start();
      replicas.followLive((index, count) => heard.set(replicaId, { index, count }));
      closers.push(() => replicas.close());
      return replicas;
    };
    // A server that died without a word: its row stays, stale, and does not count.
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await admin.query("INSERT INTO replicas (replica_id, started_time, heartbeat_time) VALUES ('rp-0', 0, 0)");
    await admin.end();
    // Ranks follow the ids' order, whichever started first.
    await replica("rp-b");
    expect(heard.get("rp-b")).toEqual({ index: 0, count: 1 });
    const first = await replica("rp-a");
    await eventually(async () => [heard.get("rp-a"), heard.get("rp-b")], ([a, b]) => a?.count === 2 && b?.count === 2);
    expect(heard.get("rp-a")).toEqual({ index: 0, count: 2 });
    expect(heard.get("rp-b")).toEqual({ index: 1, count: 2 });

    await first.close();
    await eventually(async () => heard.get("rp-b"), (b) => b?.count === 1);
    expect(heard.get("rp-b")).toEqual({ index: 0, count: 1 });
  });
});
