/**
 * Statistics while the tables are young (src/server/store/postgres/analyze-growth.ts):
 * the rule unit-tested, then a fresh schema on the real PostgreSQL analyzed
 * by the store itself once claims have added a few hundred attempts.
 */
import { create } from "@bufbuild/protobuf";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { EnqueueRolloutRequestSchema } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { newAttemptId } from "../../src/server/domain/ids.js";
import { newRollout } from "../../src/server/domain/rollout.js";
import { attachSession, newWorkerRecord } from "../../src/server/domain/worker.js";
import { GrowthAnalyzer } from "../../src/server/store/postgres/analyze-growth.js";
import { LOCK_TURN_SQL } from "../../src/server/store/postgres/lock-turn.js";
import type { PostgresStore } from "../../src/server/store/postgres-store.js";
import { T0 } from "../fixtures.js";
import { OPENING } from "../harness.js";
import { eventually } from "../polling.js";
import { freshSchema, POSTGRES_AVAILABLE, POSTGRES_URL, postgresStore } from "../postgres.js";

describe("GrowthAnalyzer", () => {
  it("analyzes when the rows added double, from 256, one run at a time", async () => {
    let runs = 0;
    let finish: () => void = () => {};
    const analyzer = new GrowthAnalyzer(() => {
      runs++;
      return new Promise<void>((resolve) => (finish = resolve));
    });
    analyzer.wrote(255);
    expect(runs).toBe(0);
    analyzer.wrote(1);
    expect(runs).toBe(1);
    // While one runs, growth waits for the next doubling.
    analyzer.wrote(200);
    expect(runs).toBe(1);
    finish();
    await new Promise((r) => setImmediate(r));
    analyzer.wrote(55);
    expect(runs).toBe(1);
    analyzer.wrote(1);
    expect(runs).toBe(2);
  });
});

describe.skipIf(!POSTGRES_AVAILABLE)("a fresh PostgreSQL schema as it grows", () => {
  const stores: PostgresStore[] = [];
  const admin = new pg.Client({ connectionString: POSTGRES_URL });
  afterAll(async () => {
    await Promise.all(stores.map((s) => s.close().catch(() => undefined)));
    await admin.end().catch(() => undefined);
  });

  it("is analyzed by the store once claims add a few hundred attempts, and the turn's locking read uses the keys", async () => {
    const schema = freshSchema("grow");
    const store = await postgresStore(schema);
    stores.push(store);
    await admin.connect();
    const liveness = { heartbeatGraceMs: 3_000 };
    const { workers } = await store.changeWorker("w-grow", undefined, (r) => attachSession(r ?? newWorkerRecord("w-grow", T0), OPENING, liveness, T0));
    const epoch = workers[0]!.after.epoch;
    const ids = Array.from({ length: 600 }, (_, i) => `ro-grow-${i}`);
    await store.enqueueRollouts(ids.map((id) => newRollout(create(EnqueueRolloutRequestSchema, {}), id, T0)));
    for (let i = 0; i < ids.length; i += 100) {
      await store.claimRollouts({ now: T0, liveness, workerId: "w-grow", epoch, rolloutIds: ids.slice(i, i + 100), newAttemptId });
    }
    const analyzed = await eventually(
      () => admin.query("SELECT relname, last_analyze FROM pg_stat_user_tables WHERE schemaname = $1", [schema]),
      ({ rows }) => ["rollouts", "attempts"].every((t) => rows.some((r) => r.relname === t && r.last_analyze !== null)),
    );
    expect(analyzed.rows.length).toBeGreaterThan(0);
    // With statistics, the turn's locking read finds its rows through the primary keys, not by reading whole tables.
    await admin.query(`SET search_path = ${schema}`);
    const { rows } = await admin.query(`EXPLAIN ${LOCK_TURN_SQL.replace(/\$(\d)/g, (_, n: string) => ["", "ARRAY['ro-grow-1']", "ARRAY['none']", "ARRAY['ro-grow-2']", "ARRAY['w-grow']"][Number(n)]!)}`);
    const plan = rows.map((r) => r["QUERY PLAN"] as string).join("\n");
    expect(plan).not.toMatch(/Seq Scan on (rollouts|attempts)/);
  });
});
