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
 */
import { findRedisServer, type RedisProcess, startRedis } from "./lib/redis.js";
import { type BenchStore, LoadWorker, type ServerProcess, startServerProcess } from "./lib/processes.js";
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
  /** Jobs per CPU-second of the dispatcher (Runnerline's server process, or redis-server). */
  perCpuS: number;
  enqueueS: number;
}

export interface PeerReport {
  mode: PeerMode;
  system: "bullmq" | "runnerline";
  /** Runnerline's store and shape; BullMQ's "redis aof everysec". */
  variant: string;
  store?: string;
  /** What Runnerline's runners spoke. */
  messages?: SessionMessages;
  result?: PeerResult;
  ratio?: number;
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
      for (const store of plan.stores) {
        for (const shape of SHAPES) {
          const variant = `${store}, ${shape.name}`;
          // Each way of speaking measured back to back, then reported, so that a lean row can carry its ratio to classic.
          const measured = new Map<SessionMessages, PeerResult>();
          for (const messages of plan.sessionMessages) {
            try {
              measured.set(messages, await measureRunnerline(store, shape, mode, plan.total, consumers, producer, messages, plan.cpuProfDir));
            } catch (error) {
              report({ mode, system: "runnerline", variant, store, messages, error: message(error) });
            }
          }
          const classic = measured.get("classic");
          for (const [messages, result] of measured) {
            const ratio = bullmq === undefined ? undefined : result.rate / bullmq.rate;
            const floor = store === "memory" ? 2 : 1.5;
            const targets = ratio === undefined || mode === "drain" ? undefined : [{ name: `≥${floor}× BullMQ`, met: ratio >= floor }];
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
      cpuSeconds: async () => redis.cpuSeconds(),
      enqueue: () => producer.call("enqueueBullmq", { port: redis.port, queue, total, batch: BATCH, retry: mode === "retry" }, 300_000),
      // BullMQ emits `completed` after the job is moved to completed in Redis: nothing left to confirm.
      flush: async () => 0,
    });
  } finally {
    await Promise.all(consumers.map((c) => c.call("closeAll").catch(() => undefined)));
    await redis.stop();
  }
}

async function measureRunnerline(
  store: BenchStore,
  shape: Shape,
  mode: PeerMode,
  total: number,
  consumers: LoadWorker[],
  producer: LoadWorker,
  messages: SessionMessages,
  cpuProfDir: string | undefined,
): Promise<PeerResult> {
  const server: ServerProcess = await startServerProcess({
    kind: "runnerline",
    store,
    // In the retry mode every first attempt fails by design, on every consumer: Runnerline would quarantine them
    // all (BullMQ has no such rule), so the comparison measures retries with quarantine out of reach.
    ...(mode === "retry" && { serveArgs: ["--quarantine-failures", "1000000"] }),
    ...(cpuProfDir !== undefined && { cpuProfDir }),
  });
  try {
    await Promise.all(
      consumers.map((c) =>
        c.call("runnerlineConsumers", {
          address: server.address,
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
      cpuSeconds: async () => {
        const sample = await server.sample();
        return (sample.cpuUserUs + sample.cpuSystemUs) / 1e6;
      },
      enqueue: () =>
        producer.call("enqueueRunnerline", { address: server.address, total, batch: BATCH, prefix: `peer-${mode}`, retry: mode === "retry" }, 300_000),
      flush: async () => {
        const flushed = await Promise.all(consumers.map((c) => c.call<{ finishedAt: number }>("flush")));
        return Math.max(...flushed.map((f) => f.finishedAt));
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
  cpuSeconds: () => Promise<number>;
  enqueue: () => Promise<{ startedAt: number; finishedAt: number }>;
  /** Resolves with the wall time at which every completion is known to be applied. */
  flush: () => Promise<number>;
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
  let cpuBefore: number;
  let startedAt: number;
  let enqueue: { startedAt: number; finishedAt: number };
  if (m.mode === "drain") {
    enqueue = await m.enqueue();
    await sleep(200);
    cpuBefore = await m.cpuSeconds();
    startedAt = performance.timeOrigin + performance.now();
    await Promise.all(m.consumers.map((c) => c.call("start")));
  } else {
    await Promise.all(m.consumers.map((c) => c.call("start")));
    await sleep(300); // every consumer is waiting for work
    cpuBefore = await m.cpuSeconds();
    const enqueued = m.enqueue();
    enqueue = await enqueued;
    startedAt = enqueue.startedAt;
  }
  const finished = await waitUntil(() => sum() >= m.total, limitMs, 5);
  if (!finished) throw new Error(`only ${sum()} of ${m.total} jobs completed in ${limitMs / 1000} s`);
  const finishedAt = Math.max(lastAt(), await m.flush());
  const cpuAfter = await m.cpuSeconds();
  for (const consumer of m.consumers) consumer.onEvent = () => {};
  const seconds = (finishedAt - startedAt) / 1000;
  return {
    rate: m.total / seconds,
    seconds,
    perCpuS: m.total / Math.max(1e-6, cpuAfter - cpuBefore),
    enqueueS: (enqueue.finishedAt - enqueue.startedAt) / 1000,
  };
}

const message = (error: unknown) => (error instanceof Error ? error.message : String(error)).slice(0, 300);
