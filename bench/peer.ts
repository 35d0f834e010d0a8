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
 */
import { findRedisServer, type RedisProcess, startRedis } from "./lib/redis.js";
import { type BenchStore, LoadWorker, type ServerSet, startServerSet } from "./lib/processes.js";
import { sleep, waitUntil } from "./lib/stats.js";
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
  /** Jobs per second over the measured span. */
  rate: number;
  seconds: number;
  /**
   * Jobs per CPU-second of the dispatcher: redis-server for BullMQ; Runnerline's server processes, and for a
   * PostgreSQL store the database's processes too.
   */
  perCpuS: number;
  enqueueS: number;
  /** CPU seconds of the dispatcher's server processes (redis-server, or every Runnerline replica) over the span. */
  serverCpuS: number;
  /** The same per process, in order (one unless a fleet). */
  replicaCpuS: number[];
  /** CPU seconds of the machine's postgres processes over the span (PostgreSQL stores). */
  dbCpuS?: number;
  /** Runnerline fleets: the jobs finished by runners of each replica, in order. */
  replicaJobs?: number[];
}

export interface PeerReport {
  mode: PeerMode;
  system: "bullmq" | "runnerline" | "echo";
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

interface Measurement {
  mode: PeerMode;
  total: number;
  consumers: LoadWorker[];
  /** CPU seconds so far of each dispatcher process, and of the database's processes where there is one. */
  cpu: () => Promise<CpuReading>;
  enqueue: () => Promise<{ startedAt: number; finishedAt: number }>;
  /** Resolves with the wall time at which every completion is known to be applied (and, for a fleet, who did them). */
  flush: () => Promise<{ finishedAt: number; replicaJobs?: number[] }>;
}

interface CpuReading {
  servers: number[];
  db?: number;
}

async function measure(m: Measurement): Promise<PeerResult> {
  const progress = new Map<number, { done: number; at: number }>();
  for (const consumer of m.consumers) {
    consumer.onEvent = (event) => {
      if (event.event === "progress") progress.set(event.worker as number, { done: event.done as number, at: event.at as number });
    };
  }
  const sum = () => [...progress.values()].reduce((a, p) => a + p.done, 0);
  const lastAt = () => Math.max(...[...progress.values()].map((p) => p.at));
  const limitMs = Math.min(300_000, Math.max(60_000, m.total * 10));
  let cpuBefore: CpuReading;
  let startedAt: number;
  let enqueue: { startedAt: number; finishedAt: number };
  if (m.mode === "drain") {
    enqueue = await m.enqueue();
    await sleep(200);
    cpuBefore = await m.cpu();
    startedAt = performance.timeOrigin + performance.now();
    await Promise.all(m.consumers.map((c) => c.call("start")));
  } else {
    await Promise.all(m.consumers.map((c) => c.call("start")));
    await sleep(300); // every consumer is waiting for work
    cpuBefore = await m.cpu();
    const enqueued = m.enqueue();
    enqueue = await enqueued;
    startedAt = enqueue.startedAt;
  }
  const finished = await waitUntil(() => sum() >= m.total, limitMs, 5);
  if (!finished) throw new Error(`only ${sum()} of ${m.total} jobs completed in ${limitMs / 1000} s`);
  const flushed = await m.flush();
  const finishedAt = Math.max(lastAt(), flushed.finishedAt);
  const cpuAfter = await m.cpu();
  for (const consumer of m.consumers) consumer.onEvent = () => {};
  const seconds = (finishedAt - startedAt) / 1000;
  const replicaCpuS = cpuAfter.servers.map((after, i) => after - cpuBefore.servers[i]!);
  const serverCpuS = replicaCpuS.reduce((a, b) => a + b, 0);
  const dbCpuS = cpuAfter.db !== undefined && cpuBefore.db !== undefined ? cpuAfter.db - cpuBefore.db : undefined;
  return {
    rate: m.total / seconds,
    seconds,
    perCpuS: m.total / Math.max(1e-6, serverCpuS + (dbCpuS ?? 0)),
    enqueueS: (enqueue.finishedAt - enqueue.startedAt) / 1000,
    serverCpuS,
    replicaCpuS,
    ...(dbCpuS !== undefined && { dbCpuS }),
    ...(flushed.replicaJobs !== undefined && { replicaJobs: flushed.replicaJobs }),
  };
}

const message = (error: unknown) => (error instanceof Error ? error.message : String(error)).slice(0, 300);
