/**
 * Dispatch throughput per store: enqueue → assigned → succeeded, in rollouts/s.
 *
 * Drives the Coordinator in-process (no network), so the figures are what the
 * store costs the single writer: the memory store, and the SQLite store with
 * synchronous=NORMAL (the default) and FULL. Runner sessions are simulated by
 * links that report SUCCEEDED and ask for the next rollout as soon as an
 * assignment arrives, one event-loop turn later.
 *
 *   npx tsx bench/dispatch-stores.ts [--rollouts 5000] [--runners 16] [--batch 50] [--stores memory,sqlite,sqlite-full,postgres]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import { AttemptStatus } from "../src/gen/runnerline/v1/attempt_pb.js";
import { EnqueueRolloutRequestSchema } from "../src/gen/runnerline/v1/rollout_pb.js";
import type { SessionResponse } from "../src/gen/runnerline/v1/runner_pb.js";
import { Coordinator } from "../src/server/dispatch/coordinator.js";
import type { SessionLink } from "../src/server/dispatch/session-link.js";
import { systemClock } from "../src/server/domain/time.js";
import { MemoryStore } from "../src/server/store/memory-store.js";
import { PostgresStore } from "../src/server/store/postgres-store.js";
import { SqliteStore } from "../src/server/store/sqlite-store.js";
import type { Store } from "../src/server/store/store.js";

const { values } = parseArgs({
  options: {
    rollouts: { type: "string", default: "5000" },
    runners: { type: "string", default: "16" },
    batch: { type: "string", default: "50" },
    stores: { type: "string", default: "memory,sqlite,sqlite-full" },
  },
});
const ROLLOUTS = Number(values.rollouts);
const RUNNERS = Number(values.runners);
const BATCH = Number(values.batch);

class BenchLink implements SessionLink {
  credits = 0;
  leaving = false;
  readonly sessionId: string;
  constructor(
    readonly workerId: string,
    private readonly onAssignment: (link: BenchLink, attemptId: string) => void,
  ) {
    this.sessionId = `se-${workerId}`;
  }
  send(message: SessionResponse) {
    if (message.message.case === "assignment") this.onAssignment(this, message.message.value.attempt!.attemptId);
  }
  close() {}
  replaced() {}
}

async function run(name: string, store: Store): Promise<{ name: string; seconds: number; perSecond: number }> {
  const coordinator = new Coordinator({
    store,
    clock: systemClock,
    heartbeatIntervalMs: 5_000,
    heartbeatGraceMs: 15_000,
    defaultUnresponsiveMs: 15_000,
  });
  let succeeded = 0;
  let finish!: () => void;
  const done = new Promise<void>((resolve) => (finish = resolve));
  const onAssignment = (link: BenchLink, attemptId: string) => {
    // The runner answers on a later turn, as a remote one would.
    setImmediate(async () => {
      await coordinator.report(attemptId, { status: AttemptStatus.SUCCEEDED, errorMessage: "" });
      if (++succeeded === ROLLOUTS) finish();
      else await coordinator.grantCredits(link, 1);
    });
  };
  const links = Array.from({ length: RUNNERS }, (_, i) => new BenchLink(`w-${i}`, onAssignment));
  const opening = { labels: {}, capacity: 1, clientVersion: "bench", peer: "local" };
  for (const link of links) await coordinator.openSession(link, opening, []);

  const started = performance.now();
  for (const link of links) await coordinator.grantCredits(link, 1);
  // Producers: many enqueue calls in flight at once, as from a training loop's client.
  const producers = [];
  for (let sent = 0; sent < ROLLOUTS; sent += BATCH) {
    const count = Math.min(BATCH, ROLLOUTS - sent);
    producers.push(coordinator.enqueue(Array.from({ length: count }, () => create(EnqueueRolloutRequestSchema, {}))));
    if (producers.length % 20 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  await Promise.all(producers);
  await done;
  const seconds = (performance.now() - started) / 1000;
  await store.close();
  return { name, seconds, perSecond: ROLLOUTS / seconds };
}

const folder = mkdtempSync(join(tmpdir(), "runnerline-bench-"));
try {
  const results = [];
  const stores = new Set(values.stores.split(","));
  if (stores.has("memory")) results.push(await run("memory", new MemoryStore()));
  if (stores.has("sqlite")) results.push(await run("sqlite (synchronous=NORMAL, default)", SqliteStore.open(join(folder, "normal.db"))));
  if (stores.has("sqlite-full")) {
    results.push(await run("sqlite (synchronous=FULL)", SqliteStore.open(join(folder, "full.db"), { synchronous: "full" })));
  }
  if (stores.has("postgres")) {
    // A schema of its own on RUNNERLINE_BENCH_POSTGRES (default: the local server's `test` database).
    const url = process.env.RUNNERLINE_BENCH_POSTGRES ?? "postgres://postgres@127.0.0.1:5432/test";
    const schema = `rl_bench_${process.pid}_${Date.now().toString(36)}`;
    results.push(await run(`postgres (schema ${schema})`, await PostgresStore.open(url, { schema })));
  }
  console.log(`${ROLLOUTS} rollouts, ${RUNNERS} runner sessions, enqueue batches of ${BATCH}, in-process coordinator`);
  console.log(`${"store".padEnd(36)} ${"seconds".padStart(8)} ${"rollouts/s".padStart(11)}`);
  for (const r of results) {
    console.log(`${r.name.padEnd(36)} ${r.seconds.toFixed(2).padStart(8)} ${Math.round(r.perSecond).toString().padStart(11)}`);
  }
} finally {
  rmSync(folder, { recursive: true, force: true });
}
