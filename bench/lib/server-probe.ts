/**
 * Preloaded into a measured server (`node --import tsx --import
 * ./bench/lib/server-probe.ts …`) so that the server code stays untouched:
 * answers the bench's IPC requests with the process's CPU time, RSS and the
 * event-loop delay seen since the previous sample.
 */
import { monitorEventLoopDelay } from "node:perf_hooks";

export interface ProbeSample {
  probe: "sample";
  id: number;
  cpuUserUs: number;
  cpuSystemUs: number;
  rssBytes: number;
  heapUsedBytes: number;
  /** Event-loop delay since the previous sample, in milliseconds. */
  loopDelayP50Ms: number;
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
}

if (process.send !== undefined) {
  const resolutionMs = 5;
  const delay = monitorEventLoopDelay({ resolution: resolutionMs });
  // The histogram records the time between timer ticks; the delay is what exceeds the tick.
  const lateness = (ns: number) => (delay.count > 0 ? Math.max(0, ns / 1e6 - resolutionMs) : 0);
  delay.enable();
  process.on("message", (message: { probe?: string; id?: number; gc?: boolean }) => {
    if (message?.probe !== "sample") return;
    // A full collection first (the bench passes --expose-gc), so that memory per session counts what is live.
    const gc = (globalThis as { gc?: () => void }).gc;
    if (message.gc === true && gc !== undefined) gc();
    const cpu = process.cpuUsage();
    const memory = process.memoryUsage();
    const sample: ProbeSample = {
      probe: "sample",
      id: message.id ?? 0,
      cpuUserUs: cpu.user,
      cpuSystemUs: cpu.system,
      rssBytes: memory.rss,
      heapUsedBytes: memory.heapUsed,
      loopDelayP50Ms: lateness(delay.percentile(50)),
      loopDelayP99Ms: lateness(delay.percentile(99)),
      loopDelayMaxMs: lateness(delay.max),
    };
    delay.reset();
    process.send!(sample);
  });
  // The IPC channel must not keep a server alive that wants to exit.
  process.channel?.unref();
}
