/** What the probe preloaded into a measured server (server-probe.mjs) answers the bench's IPC requests with. */

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
