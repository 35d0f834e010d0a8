// Preloaded into a measured server (`node --import ./bench/lib/server-probe.mjs …`) so that the server code stays
// untouched: answers the bench's IPC requests with the process's CPU time, RSS and the event-loop delay seen since
// the previous sample (a ProbeSample: probe-sample.ts). Plain JavaScript, so that the server runs as users run it,
// without a TypeScript loader in the process.
import { monitorEventLoopDelay } from "node:perf_hooks";

if (process.send !== undefined) {
  const resolutionMs = 5;
  const delay = monitorEventLoopDelay({ resolution: resolutionMs });
  // The histogram records the time between timer ticks; the delay is what exceeds the tick.
  const lateness = (ns) => (delay.count > 0 ? Math.max(0, ns / 1e6 - resolutionMs) : 0);
  delay.enable();
  process.on("message", (message) => {
    if (message?.probe !== "sample") return;
    // A full collection first (the bench passes --expose-gc), so that memory per session counts what is live.
    if (message.gc === true && typeof globalThis.gc === "function") globalThis.gc();
    const cpu = process.cpuUsage();
    const memory = process.memoryUsage();
    process.send({
      probe: "sample",
      id: message.id ?? 0,
      cpuUserUs: cpu.user,
      cpuSystemUs: cpu.system,
      rssBytes: memory.rss,
      heapUsedBytes: memory.heapUsed,
      loopDelayP50Ms: lateness(delay.percentile(50)),
      loopDelayP99Ms: lateness(delay.percentile(99)),
      loopDelayMaxMs: lateness(delay.max),
    });
    delay.reset();
  });
  // The IPC channel must not keep a server alive that wants to exit.
  process.channel?.unref();
}
