/**
 * `npm run bench:web [-- --workers 10000 --rate 1000 --seconds 10 --size 50]`
 *
 * The web page with a large fleet, in Debian's chromium: how long the
 * Runners page takes to show its first page (50 and 500 rows), and how the
 * page holds up while the server reports `rate` worker changes per second
 * (workers connecting and dropping, each a WatchWorkers message): frames
 * painted, the longest gap between frames, main-thread long tasks, the
 * latency from a change of a visible row to its new badge, and JS heap.
 * The server runs in this process; the fleet's sessions are in-process links
 * (the coordinator cannot tell them from gRPC sessions), so the load
 * generator costs little next to what is measured. BENCH_PROFILE=1 adds the
 * page's CPU profile (self time per function) for the flood.
 */
import { create } from "@bufbuild/protobuf";
import { parseArgs } from "node:util";
import { SystemSnapshotSchema } from "../src/gen/runnerline/v1/telemetry_pb.js";
import { startServer } from "../src/server/app.js";
import type { SessionLink } from "../src/server/dispatch/session-link.js";
import { launchBrowser } from "../test/web/browser.js";
import { freePort } from "../test/polling.js";

const { values } = parseArgs({
  options: {
    workers: { type: "string", default: "10000" },
    rate: { type: "string", default: "1000" },
    seconds: { type: "string", default: "10" },
    size: { type: "string", default: "50" },
  },
});
const WORKERS = Number(values.workers);
const RATE = Number(values.rate);
const SECONDS = Number(values.seconds);
const SIZE = Number(values.size);

const httpPort = await freePort();
const server = await startServer({
  grpcAddress: "127.0.0.1:0",
  httpAddress: `127.0.0.1:${httpPort}`,
  store: "memory",
  heartbeatIntervalMs: 5_000,
  log: () => undefined,
});
const coordinator = server.coordinator;
const base = `http://127.0.0.1:${httpPort}`;

function link(workerId: string, n: number): SessionLink {
  return { sessionId: `bench-${workerId}-${n}`, workerId, credits: 0, leaving: false, send() {}, close() {}, replaced() {} };
}
const opening = (i: number) => ({ labels: { pool: i % 2 ? "gpu" : "cpu", zone: `z${i % 4}` }, capacity: 2, clientVersion: "bench", peer: "127.0.0.1" });
const snapshot = (i: number) =>
  create(SystemSnapshotSchema, {
    cpu: { usagePercent: i % 100 },
    memory: { usedBytes: BigInt(i % 64) << 30n, totalBytes: 64n << 30n },
    gpus: [0, 1, 2, 3].map((index) => ({ index, name: "NVIDIA H100", utilizationPercent: (i + index * 10) % 100, memoryUsedBytes: 40n << 30n, memoryTotalBytes: 80n << 30n })),
  });

const ids = Array.from({ length: WORKERS }, (_, i) => `worker-${String(i).padStart(5, "0")}`);
const links = new Map<string, SessionLink>();
let sessions = 0;
const started = performance.now();
for (let i = 0; i < WORKERS; i++) {
  const l = link(ids[i]!, sessions++);
  links.set(ids[i]!, l);
  await coordinator.openSession(l, opening(i), []);
  await coordinator.heartbeat(ids[i]!, { snapshot: snapshot(i) });
}
console.log(`fleet: ${WORKERS} workers connected in ${((performance.now() - started) / 1000).toFixed(1)} s`);

/** Connects a dropped worker or drops a connected one: one status change, one watch message. */
async function toggle(workerId: string) {
  const current = links.get(workerId);
  if (current !== undefined) {
    links.delete(workerId);
    await coordinator.closeSession(current);
  } else {
    const l = link(workerId, sessions++);
    links.set(workerId, l);
    await coordinator.openSession(l, opening(0), []);
  }
}

const browser = await launchBrowser({ width: 1280, height: 900 }, { bypassCSP: true });
const page = await browser.context.newPage();
const results: Record<string, number | string> = { workers: WORKERS, rate: RATE, seconds: SECONDS };

async function firstPaint(path: string, rows: number): Promise<number> {
  await page.goto(`${base}${path}`);
  await page.waitForFunction(`document.querySelectorAll("table.runners tbody tr").length === ${rows}`, undefined, { polling: "raf", timeout: 30_000 });
  return (await page.evaluate("performance.now()")) as number;
}
results.initial_load_50_ms = Math.round(await firstPaint("/runners?status=all", 50));
results.initial_load_500_ms = Math.round(await firstPaint("/runners?status=all&size=500", 500));
// The flood is watched on a page of --size rows.
if (SIZE !== 500) await firstPaint(`/runners?status=all${SIZE === 50 ? "" : `&size=${SIZE}`}`, SIZE);
results.page_size = SIZE;

// Frame and long-task recorder in the page (a string: tsx's helpers do not exist in the page).
await page.evaluate(`{
  window.bench = { frames: [], longTasks: [] };
  new PerformanceObserver((list) => { for (const e of list.getEntries()) window.bench.longTasks.push(e.duration); })
    .observe({ type: "longtask", buffered: false });
  const tick = (t) => { window.bench.frames.push(t); requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
}`);

const cdp = process.env.BENCH_PROFILE ? await browser.context.newCDPSession(page) : undefined;
if (cdp) {
  await cdp.send("Profiler.enable");
  await cdp.send("Profiler.start");
}

// The flood: RATE changes per second, spread over the whole fleet (most rows are on other pages).
let changes = 0;
const floodStart = performance.now();
const latencies: number[] = [];
let nextProbe = floodStart + 1_000;
while (performance.now() - floodStart < SECONDS * 1000) {
  const due = Math.floor(((performance.now() - floodStart) / 1000) * RATE);
  while (changes < due) {
    await toggle(ids[(changes * 7919) % WORKERS]!);
    changes++;
  }
  if (performance.now() >= nextProbe) {
    // A visible row (the first one) changes: time until its badge says so.
    const id = ids[0]!;
    const want = links.has(id) ? "UNKNOWN" : "IDLE";
    const t0 = performance.now();
    await toggle(id);
    const probe = `document.querySelector('tr[data-worker-id="${id}"]')?.getAttribute("data-status") === "${want}"`;
    await page.waitForFunction(probe, undefined, { polling: "raf", timeout: 10_000 });
    latencies.push(performance.now() - t0);
    nextProbe = performance.now() + 1_000;
  }
  await new Promise((resolve) => setTimeout(resolve, 5));
}
const floodSeconds = (performance.now() - floodStart) / 1000;
if (cdp) {
  const { profile } = await cdp.send("Profiler.stop");
  // Self time per function, top 15.
  const self = new Map<string, number>();
  const dt = profile.timeDeltas ?? [];
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  (profile.samples ?? []).forEach((id, i) => {
    const n = byId.get(id)!;
    const key = `${n.callFrame.functionName || "(anon)"} ${n.callFrame.url.split("/").pop()}:${n.callFrame.lineNumber}:${n.callFrame.columnNumber}`;
    self.set(key, (self.get(key) ?? 0) + (dt[i] ?? 0) / 1000);
  });
  console.log([...self].sort((a, b) => b[1] - a[1]).slice(0, 25).map(([k, v]) => `${v.toFixed(0).padStart(6)} ms  ${k}`).join("\n"));
}
const stats = (await page.evaluate(`(() => {
  const frames = window.bench.frames;
  let maxGap = 0;
  for (let i = 1; i < frames.length; i++) maxGap = Math.max(maxGap, frames[i] - frames[i - 1]);
  return {
    frames: frames.length,
    maxGap,
    longTaskMs: window.bench.longTasks.reduce((a, b) => a + b, 0),
    longTasks: window.bench.longTasks.length,
    heap: performance.memory ? performance.memory.usedJSHeapSize : 0,
  };
})()`)) as { frames: number; maxGap: number; longTaskMs: number; longTasks: number; heap: number };
latencies.sort((a, b) => a - b);
results.changes_per_s = Math.round(changes / floodSeconds);
results.fps = Math.round(stats.frames / floodSeconds);
results.max_frame_gap_ms = Math.round(stats.maxGap);
results.long_tasks = stats.longTasks;
results.long_task_ms_per_s = Math.round(stats.longTaskMs / floodSeconds);
results.visible_change_latency_p50_ms = Math.round(latencies[Math.floor(latencies.length / 2)] ?? NaN);
results.visible_change_latency_max_ms = Math.round(latencies.at(-1) ?? NaN);
results.js_heap_mb = Math.round(stats.heap / 1e6);
console.log(JSON.stringify(results));

await browser.close();
for (const l of links.values()) await coordinator.closeSession(l);
await server.close();
