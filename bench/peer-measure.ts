/**
 * The measured window of one peer row (bench/peer.ts): consumers waiting (e2e, retry) or started after everything
 * is enqueued (drain), the enqueue, completions counted from the consumers' progress events, a flush that confirms
 * them, and the dispatcher's CPU (and a PostgreSQL database's) read before and after.
 */
import type { LoadWorker } from "./lib/processes.js";
import { backendsCpuSince } from "./lib/postgres.js";
import { sleep, waitUntil } from "./lib/stats.js";
import type { PeerMode, PeerResult } from "./peer.js";

export interface Measurement {
  mode: PeerMode;
  total: number;
  consumers: LoadWorker[];
  /** CPU seconds so far of each dispatcher process, and of the database's processes where there is one. */
  cpu: () => Promise<CpuReading>;
  enqueue: () => Promise<{ startedAt: number; finishedAt: number }>;
  /** Resolves with the wall time at which every completion is known to be applied (and, for a fleet, who did them). */
  flush: () => Promise<{ finishedAt: number; replicaJobs?: number[] }>;
  /** PostgreSQL: the measured database's backends (databaseBackendsCpu), also read every 500 ms in the window. */
  dbBackends?: () => Map<number, number>;
}

interface CpuReading {
  servers: number[];
  db?: number;
}

export async function measure(m: Measurement): Promise<PeerResult> {
  const progress = new Map<number, { done: number; at: number }>();
  /** When a consumer first said it had finished a job (its progress events come every 20 ms while the count moves). */
  let firstDoneAt: number | undefined;
  for (const consumer of m.consumers) {
    consumer.onEvent = (event) => {
      if (event.event !== "progress") return;
      progress.set(event.worker as number, { done: event.done as number, at: event.at as number });
      if ((event.done as number) > 0 && (firstDoneAt === undefined || (event.at as number) < firstDoneAt)) firstDoneAt = event.at as number;
    };
  }
  const sum = () => [...progress.values()].reduce((a, p) => a + p.done, 0);
  const lastAt = () => Math.max(...[...progress.values()].map((p) => p.at));
  // At least 2 minutes: on a machine shared with other work a PostgreSQL row of 4,000 jobs can take more than one.
  const limitMs = Math.min(300_000, Math.max(120_000, m.total * 10));
  let cpuBefore: CpuReading;
  // Each backend's last reading: one that exits within the window (a pool's idle connection) keeps what it used
  // until the last reading before it went.
  let backendsBefore = new Map<number, number>();
  const backendsLast = new Map<number, number>();
  const readBackends = () => {
    for (const [pid, seconds] of m.dbBackends?.() ?? []) backendsLast.set(pid, seconds);
  };
  let backendsTimer: NodeJS.Timeout | undefined;
  const startBackends = () => {
    if (m.dbBackends === undefined) return;
    backendsBefore = m.dbBackends();
    backendsTimer = setInterval(readBackends, 500);
  };
  let startedAt: number;
  let enqueue: { startedAt: number; finishedAt: number };
  if (m.mode === "drain") {
    enqueue = await m.enqueue();
    await sleep(200);
    cpuBefore = await m.cpu();
    startBackends();
    startedAt = performance.timeOrigin + performance.now();
    await Promise.all(m.consumers.map((c) => c.call("start")));
  } else {
    await Promise.all(m.consumers.map((c) => c.call("start")));
    await sleep(300); // every consumer is waiting for work
    cpuBefore = await m.cpu();
    startBackends();
    const enqueued = m.enqueue();
    enqueue = await enqueued;
    startedAt = enqueue.startedAt;
  }
  const finished = await waitUntil(() => sum() >= m.total, limitMs, 5);
  if (!finished) throw new Error(`only ${sum()} of ${m.total} jobs completed in ${limitMs / 1000} s`);
  const flushed = await m.flush();
  const finishedAt = Math.max(lastAt(), flushed.finishedAt);
  const cpuAfter = await m.cpu();
  clearInterval(backendsTimer);
  readBackends();
  for (const consumer of m.consumers) consumer.onEvent = () => {};
  const seconds = (finishedAt - startedAt) / 1000;
  const replicaCpuS = cpuAfter.servers.map((after, i) => after - cpuBefore.servers[i]!);
  const serverCpuS = replicaCpuS.reduce((a, b) => a + b, 0);
  const dbCpuS = cpuAfter.db !== undefined && cpuBefore.db !== undefined ? cpuAfter.db - cpuBefore.db : undefined;
  const dbOwnCpuS = m.dbBackends === undefined ? undefined : backendsCpuSince(backendsBefore, backendsLast);
  return {
    jobs: m.total,
    rate: m.total / seconds,
    seconds,
    perCpuS: m.total / Math.max(1e-6, serverCpuS + (dbCpuS ?? 0)),
    enqueueS: (enqueue.finishedAt - enqueue.startedAt) / 1000,
    // With consumers waiting: the first job's whole trip (enqueue, assignment, completion, its report seen), at 20 ms
    // resolution; an upper bound on the first assignment.
    ...(m.mode !== "drain" && firstDoneAt !== undefined && { firstDoneMs: firstDoneAt - startedAt }),
    serverCpuS,
    replicaCpuS,
    ...(dbCpuS !== undefined && { dbCpuS }),
    ...(dbOwnCpuS !== undefined && { dbOwnCpuS }),
    ...(flushed.replicaJobs !== undefined && { replicaJobs: flushed.replicaJobs }),
  };
}
