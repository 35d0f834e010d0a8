/**
 * The peer scenario: Runnerline against BullMQ on a private, persistent Redis,
 * with the same workload and the same shape of consumers on both sides, in
 * the same run. M no-op jobs are enqueued in batches of 1,000 by one producer
 * process and consumed by 4 load processes × 50 concurrent consumers:
 * BullMQ as 4 Workers of concurrency 50; Runnerline as 200 runner sessions of
 * capacity 1, or as 4 sessions of capacity 50.
 *
 * Three modes: "e2e" (first enqueue → last completion, consumers waiting),
 * "drain" (everything enqueued first, then consumers start: the drain rate),
 * and "retry" (e2e where every job's first attempt fails and is retried once).
 *
 * The echo baseline (bench/echo-server.ts: the same grpc-js transport and
 * codec, a bare FIFO and no domain logic) runs each shape too: the ceiling
 * that the transport alone allows a Runnerline server in this shape.
 *
 * A PostgreSQL store runs as one server or as 3 replicas on one fresh
 * database: each consumer process spreads its sessions over the replicas, the
 * producer enqueues on the first one, and the dispatcher's CPU is the
 * replicas' and the database's together (as redis-server's is BullMQ's).
 * When a PostgreSQL store is measured, graphile-worker (bench/lib/graphile.ts)
 * runs the same shape on the same PostgreSQL first, plain and batched, as its
 * peer: 4 runners of concurrency 50, jobs added with addJobs in the same
 * batches; its dispatcher CPU is the database's. Database CPU is read from
 * /proc twice: every postgres process of the machine, and the backends of the
 * measured database alone (others' tests on a shared PostgreSQL stay out).
 */
import { findRedisServer, type RedisProcess, startRedis } from "./lib/redis.js";
import { type GraphileConfig, graphileDrained, installGraphile } from "./lib/graphile.js";
import {
  createBenchDatabase,
  DEFAULT_POSTGRES_URL,
  databaseBackendsCpu,
  postgresCpuSeconds,
  requirePostgres,
} from "./lib/postgres.js";
import { type BenchStore, isPostgresStore, LoadWorker, type ServerSet, startServerSet } from "./lib/processes.js";
import { measure } from "./peer-measure.js";
import type { SessionMessages } from "./lib/wire.js";

export type PeerMode = "e2e" | "drain" | "retry";

interface Shape {
  name: string;
  /** Runner sessions per load process (Runnerline), and the slots of each. */
  sessionsPerProcess: number;
  capacity: number;
}

const CONSUMER_PROCESSES = 4;
const CONCURRENCY_PER_PROCESS = 50;
const BATCH = 1000;
const SHAPES: Shape[] = [
  { name: "200×1", sessionsPerProcess: CONCURRENCY_PER_PROCESS, capacity: 1 },
  { name: "4×50", sessionsPerProcess: 1, capacity: CONCURRENCY_PER_PROCESS },
];

export interface PeerResult {
  /** Jobs measured. */
  jobs: number;
  /** Jobs per second over the measured span. */
  rate: number;
  seconds: number;
  /**
   * Jobs per CPU-second of the dispatcher: redis-server for BullMQ; Runnerline's server processes, and for a
   * PostgreSQL store the database's processes too.
   */
  perCpuS: number;
  enqueueS: number;
  /** Consumers waiting (e2e, retry): ms from the first enqueue call to the first job reported done (20 ms resolution). */
  firstDoneMs?: number;
  /** CPU seconds of the dispatcher's server processes (redis-server, or every Runnerline replica) over the span. */
  serverCpuS: number;
  /** The same per process, in order (one unless a fleet). */
  replicaCpuS: number[];
  /** CPU seconds of the machine's postgres processes over the span (PostgreSQL stores). */
  dbCpuS?: number;
  /** CPU seconds of the measured database's own backends over the span (PostgreSQL stores). */
  dbOwnCpuS?: number;
  /** Runnerline fleets: the jobs finished by runners of each replica, in order. */
  replicaJobs?: number[];
}

export interface PeerReport {
  mode: PeerMode;
  system: "bullmq" | "runnerline" | "echo" | "graphile-worker";
  /** Runnerline's store and shape; BullMQ's "redis aof everysec". */
  variant: string;
  store?: string;
  /** What Runnerline's runners spoke. */
  messages?: SessionMessages;
  result?: PeerResult;
  ratio?: number;
  /** Jobs per dispatcher CPU-second ÷ BullMQ's. */
  perCpuRatio?: number;
  /** Runnerline: rate ÷ the echo baseline's in the same shape and mode. */
  echoRatio?: number;
  /** Runnerline on PostgreSQL: against graphile-worker batched in the same mode (rate, enqueue time, own database CPU per job). */
  versusGraphile?: { rate: number; enqueueS: number; dbOwnCpuPerJob?: number };
  /** A lean row measured after its classic twin: the ratios to it. */
  versusClassic?: { rateVsClassic: number; perCpuSVsClassic: number };
  targets?: { name: string; met: boolean }[];
  error?: string;
}

export interface PeerPlan {
  total: number;
  stores: BenchStore[];
  modes: PeerMode[];
  /** V8 CPU profiles of each Runnerline server child go here (--cpu-prof). */
  cpuProfDir?: string;
  sessionMessages: SessionMessages[];
  /** Where PostgreSQL stores create their databases. */
  postgresUrl?: string;
}

/** Runs every mode, BullMQ first, then each Runnerline store and shape, and reports rows as they finish. */
export async function runPeerScenario(plan: PeerPlan, report: (row: PeerReport) => void): Promise<void> {
  const redis = findRedisServer();
  const consumers = Array.from({ length: CONSUMER_PROCESSES }, (_, i) => new LoadWorker(i, "bench/peer-worker.ts"));
  const producer = new LoadWorker(CONSUMER_PROCESSES, "bench/peer-worker.ts");
  try {
    for (const mode of plan.modes) {
      let bullmq: PeerResult | undefined;
      if (redis === undefined) {
        report({ mode, system: "bullmq", variant: "skipped: no redis-server", error: "skipped: no redis-server" });
      } else {
        const variant = `redis ${redis.version} aof everysec, 4×${CONCURRENCY_PER_PROCESS}`;
        try {
          bullmq = await measureBullmq(redis.path, mode, plan.total, consumers, producer);
          report({ mode, system: "bullmq", variant, result: bullmq });
        } catch (error) {
          report({ mode, system: "bullmq", variant, error: message(error) });
        }
      }
      const echo = new Map<Shape, PeerResult>();
      // The transport's ceiling, spoken the way the Runnerline rows speak (lean when they are measured lean).
      const echoMessages = plan.sessionMessages.includes("lean") ? "lean" : "classic";
      for (const shape of SHAPES) {
        const variant = `echo (grpc-js, no logic), ${shape.name}`;
        try {
          const result = await measureRunnerline("echo", "memory", shape, mode, plan.total, consumers, producer, echoMessages, plan);
          echo.set(shape, result);
          report({
            mode,
            system: "echo",
            variant,
            messages: echoMessages,
            result,
            ...(bullmq !== undefined && { ratio: result.rate / bullmq.rate, perCpuRatio: result.perCpuS / bullmq.perCpuS }),
          });
        } catch (error) {
          report({ mode, system: "echo", variant, messages: echoMessages, error: message(error) });
        }
      }
      const graphile = plan.stores.some(isPostgresStore) ? await graphileRows(plan, mode, consumers, producer, bullmq, report) : undefined;
      for (const store of plan.stores) {
        for (const shape of SHAPES) {
          const variant = `${store}, ${shape.name}`;
          // Each way of speaking measured back to back, then reported, so that a lean row can carry its ratio to classic.
          const measured = new Map<SessionMessages, PeerResult>();
          for (const messages of plan.sessionMessages) {
            try {
              measured.set(messages, await measureRunnerline("runnerline", store, shape, mode, plan.total, consumers, producer, messages, plan));
            } catch (error) {
              report({ mode, system: "runnerline", variant, store, messages, error: message(error) });
            }
          }
          const classic = measured.get("classic");
          for (const [messages, result] of measured) {
            const ratio = bullmq === undefined ? undefined : result.rate / bullmq.rate;
            const perCpuRatio = bullmq === undefined ? undefined : result.perCpuS / bullmq.perCpuS;
            const ceiling = echo.get(shape);
            const targets = peerTargets(store, mode, ratio, perCpuRatio);
            const versusGraphile = isPostgresStore(store) && graphile !== undefined ? versusOf(result, graphile) : undefined;
            const versusClassic =
              messages === "lean" && classic !== undefined
                ? { rateVsClassic: result.rate / classic.rate, perCpuSVsClassic: result.perCpuS / classic.perCpuS }
                : undefined;
            report({
              mode,
              system: "runnerline",
              variant,
              store,
              messages,
              result,
              ...(ratio !== undefined && { ratio }),
              ...(perCpuRatio !== undefined && { perCpuRatio }),
              ...(ceiling !== undefined && { echoRatio: result.rate / ceiling.rate }),
              ...(targets && { targets }),
              ...(versusClassic && { versusClassic }),
              ...(versusGraphile && { versusGraphile }),
            });
          }
        }
      }
    }
  } finally {
    await Promise.all([...consumers, producer].map((worker) => worker.stop()));
  }
}

/**
 * The store seam issue's floors for memory (2×) and SQLite (1.5×) in e2e and retry; for 3 PostgreSQL replicas the
 * scale-out issue's "≥ BullMQ end to end", read both by rate and per CPU-second of the dispatcher (the machine's two
 * cores are shared by everything); none for one PostgreSQL server.
 */
function peerTargets(store: BenchStore, mode: PeerMode, ratio: number | undefined, perCpuRatio: number | undefined) {
  if (ratio === undefined || perCpuRatio === undefined || mode === "drain") return undefined;
  if (store === "postgres-3") {
    if (mode !== "e2e") return undefined;
    return [
      { name: "≥ BullMQ e2e rate", met: ratio >= 1 },
      { name: "≥ BullMQ e2e per dispatcher CPU-s", met: perCpuRatio >= 1 },
    ];
  }
  if (store === "postgres") return undefined;
  const floor = store === "memory" ? 2 : 1.5;
  return [{ name: `≥${floor}× BullMQ`, met: ratio >= floor }];
}

async function measureBullmq(binary: string, mode: PeerMode, total: number, consumers: LoadWorker[], producer: LoadWorker): Promise<PeerResult> {
  const redis: RedisProcess = await startRedis(binary);
  const queue = `peer-${mode}-${Date.now()}`;
  try {
    await Promise.all(
      consumers.map((c) =>
        c.call("bullmqConsumers", { port: redis.port, queue, concurrency: CONCURRENCY_PER_PROCESS, failFirst: mode === "retry" }),
      ),
    );
    return await measure({
      mode,
      total,
      consumers,
      cpu: async () => ({ servers: [redis.cpuSeconds()] }),
      enqueue: () => producer.call("enqueueBullmq", { port: redis.port, queue, total, batch: BATCH, retry: mode === "retry" }, 300_000),
      // BullMQ emits `completed` after the job is moved to completed in Redis: nothing left to confirm.
      flush: async () => ({ finishedAt: 0 }),
    });
  } finally {
    await Promise.all(consumers.map((c) => c.call("closeAll").catch(() => undefined)));
    await redis.stop();
  }
}

/**
 * graphile-worker plain, then batched, on fresh databases of the bench's PostgreSQL; resolves with the batched
 * result (what Runnerline on PostgreSQL is held against). Not in the retry mode: graphile-worker waits
 * exp(attempts) seconds before a retry (2.7 s for the first), which no option shortens, so the mode would time its
 * back-off.
 */
async function graphileRows(
  plan: PeerPlan,
  mode: PeerMode,
  consumers: LoadWorker[],
  producer: LoadWorker,
  bullmq: PeerResult | undefined,
  report: (row: PeerReport) => void,
): Promise<PeerResult | undefined> {
  let batched: PeerResult | undefined;
  for (const config of ["plain", "batched"] as GraphileConfig[]) {
    const variant = `graphile-worker 0.17 ${config}, 4×${CONCURRENCY_PER_PROCESS}`;
    if (mode === "retry") {
      report({ mode, system: "graphile-worker", variant, error: "skipped: its retries wait exp(attempts) s (2.7 s), not set by any option" });
      continue;
    }
    try {
      const result = await measureGraphile(plan, config, mode, consumers, producer);
      if (config === "batched") batched = result;
      report({
        mode,
        system: "graphile-worker",
        variant,
        result,
        ...(bullmq !== undefined && { ratio: result.rate / bullmq.rate, perCpuRatio: result.perCpuS / bullmq.perCpuS }),
      });
    } catch (error) {
      report({ mode, system: "graphile-worker", variant, error: message(error) });
    }
  }
  return batched;
}

function versusOf(result: PeerResult, graphile: PeerResult): PeerReport["versusGraphile"] {
  const perJob = (r: PeerResult) => (r.dbOwnCpuS === undefined ? undefined : r.dbOwnCpuS / Math.max(1, r.jobs));
  const ours = perJob(result);
  const theirs = perJob(graphile);
  return {
    rate: result.rate / graphile.rate,
    enqueueS: result.enqueueS / graphile.enqueueS,
    ...(ours !== undefined && theirs !== undefined && theirs > 0 && { dbOwnCpuPerJob: ours / theirs }),
  };
}

async function measureGraphile(plan: PeerPlan, config: GraphileConfig, mode: PeerMode, consumers: LoadWorker[], producer: LoadWorker): Promise<PeerResult> {
  const base = plan.postgresUrl ?? DEFAULT_POSTGRES_URL;
  await requirePostgres(base);
  const database = await createBenchDatabase(base);
  try {
    await installGraphile(database.url);
    await Promise.all(consumers.map((c) => c.call("graphileConsumers", { url: database.url, concurrency: CONCURRENCY_PER_PROCESS, config })));
    return await measure({
      mode,
      total: plan.total,
      consumers,
      cpu: async () => {
        const db = postgresCpuSeconds();
        return { servers: [], ...(db !== undefined && { db }) };
      },
      dbBackends: () => databaseBackendsCpu(database.name),
      enqueue: () => producer.call("enqueueGraphile", { url: database.url, total: plan.total, batch: BATCH }, 300_000),
      // A completed job leaves the table in the statement that completes it: empty means every completion is written.
      flush: async () => ({ finishedAt: await graphileDrained(database.url) }),
    });
  } finally {
    await Promise.all(consumers.map((c) => c.call("closeAll").catch(() => undefined)));
    await database.drop().catch(() => undefined);
  }
}

async function measureRunnerline(
  kind: "runnerline" | "echo",
  store: BenchStore,
  shape: Shape,
  mode: PeerMode,
  total: number,
  consumers: LoadWorker[],
  producer: LoadWorker,
  messages: SessionMessages,
  plan: PeerPlan,
): Promise<PeerResult> {
  const server: ServerSet = await startServerSet({
    kind,
    store,
    // The retry mode's first attempts fail on every consumer alike: a wave that quarantine, judging each runner
    // against the fleet, leaves alone with the default flags.
    ...(plan.cpuProfDir !== undefined && { cpuProfDir: plan.cpuProfDir }),
    ...(plan.postgresUrl !== undefined && { postgresUrl: plan.postgresUrl }),
  });
  try {
    await Promise.all(
      consumers.map((c) =>
        c.call("runnerlineConsumers", {
          addresses: server.addresses,
          sessions: shape.sessionsPerProcess,
          capacity: shape.capacity,
          failFirst: mode === "retry",
          prefix: `peer-${mode}`,
          messages,
        }),
      ),
    );
    return await measure({
      mode,
      total,
      consumers,
      cpu: async () => {
        const sample = await server.sample();
        return {
          servers: sample.servers.map((s) => (s.cpuUserUs + s.cpuSystemUs) / 1e6),
          ...(sample.dbCpuS !== undefined && { db: sample.dbCpuS }),
        };
      },
      ...(server.databaseName !== undefined && { dbBackends: () => databaseBackendsCpu(server.databaseName!) }),
      enqueue: () =>
        producer.call("enqueueRunnerline", { address: server.address, total, batch: BATCH, prefix: `peer-${mode}`, retry: mode === "retry" }, 300_000),
      flush: async () => {
        const flushed = await Promise.all(
          consumers.map((c) => c.call<{ finishedAt: number; doneByAddress: Record<string, number> }>("flush")),
        );
        return {
          finishedAt: Math.max(...flushed.map((f) => f.finishedAt)),
          ...(server.addresses.length > 1 && {
            replicaJobs: server.addresses.map((address) => flushed.reduce((sum, f) => sum + (f.doneByAddress[address] ?? 0), 0)),
          }),
        };
      },
    });
  } finally {
    await Promise.all(consumers.map((c) => c.call("closeAll").catch(() => undefined)));
    await server.stop();
  }
}

const message = (error: unknown) => (error instanceof Error ? error.message : String(error)).slice(0, 300);
