/**
 * GetWorkerHistory, WatchWorkers' changes_only and ListWorkers'
 * heartbeat_grace over the wire, and the history fed by real runner
 * heartbeats.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { Runner } from "../../src/client/runner.js";
import { WorkerService, WorkerStatus } from "../../src/gen/runnerline/v1/worker_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { parseServeArgs } from "../../src/cli/serve-command.js";
import { eventually } from "../polling.js";

let server: RunningServer;
let workers: ReturnType<typeof createClient<typeof WorkerService>>;

beforeAll(async () => {
  server = await startServer({
    grpcAddress: "127.0.0.1:0",
    httpAddress: "127.0.0.1:0",
    store: "memory",
    heartbeatIntervalMs: 200,
    heartbeatGraceMs: 2_000,
    historySamples: 3,
    log: () => {},
  });
  workers = createClient(WorkerService, createConnectTransport({ baseUrl: `http://127.0.0.1:${server.httpPort}`, httpVersion: "1.1" }));
});

afterAll(() => server.close());

it("answers NOT_FOUND for a worker the server never heard of", async () => {
  const error = await workers.getWorkerHistory({ workerId: "nobody" }).catch((e: unknown) => e);
  expect(ConnectError.from(error).code).toBe(Code.NotFound);
  const invalid = await workers.getWorkerHistory({ workerId: "" }).catch((e: unknown) => e);
  expect(ConnectError.from(invalid).code).toBe(Code.InvalidArgument);
});

it("keeps the last --history-samples snapshots of each worker, oldest first", async () => {
  for (let cpu = 1; cpu <= 5; cpu++) {
    await workers.sendHeartbeat({ workerId: "unary-1", snapshot: { cpu: { usagePercent: cpu }, gpus: [{ index: 0, utilizationPercent: cpu * 10 }] } });
  }
  await workers.sendHeartbeat({ workerId: "unary-1" }); // no snapshot: no sample
  const { samples } = await workers.getWorkerHistory({ workerId: "unary-1" });
  expect(samples.map((s) => s.cpuUsagePercent)).toEqual([3, 4, 5]);
  expect(samples.map((s) => s.gpus[0]?.utilizationPercent)).toEqual([30, 40, 50]);
  const times = samples.map((s) => Number(s.receiveTime!.seconds) * 1000 + s.receiveTime!.nanos / 1e6);
  expect([...times].sort((a, b) => a - b)).toEqual(times);
});

it("records the heartbeats of a runner session", async () => {
  let beat = 0;
  const runner = new Runner({
    address: `127.0.0.1:${server.grpcPort}`,
    workerId: "session-1",
    collectSnapshot: async () => ({ cpu: { usagePercent: ++beat } }) as never,
    logger: { debug() {}, info() {}, warn() {}, error() {} },
  });
  runner.start();
  try {
    const { samples } = await eventually(
      () => workers.getWorkerHistory({ workerId: "session-1" }).catch(() => ({ samples: [] })),
      (r) => r.samples.length === 3,
    );
    const cpus = samples.map((s) => s.cpuUsagePercent);
    expect(cpus[1]! - cpus[0]!).toBe(1);
  } finally {
    await runner.stop();
  }
});

it("reports the heartbeat grace with every ListWorkers page", async () => {
  const page = await workers.listWorkers({});
  expect(page.heartbeatGrace).toMatchObject({ seconds: 2n, nanos: 0 });
});

it("WatchWorkers with changes_only sends an empty first message at once, then only changes", async () => {
  await workers.sendHeartbeat({ workerId: "watch-quiet" });
  const abort = new AbortController();
  const stream = workers.watchWorkers({ workerIdContains: "watch-", changesOnly: true }, { signal: abort.signal })[Symbol.asyncIterator]();
  const first = await stream.next();
  expect(first.value?.worker).toBeUndefined();
  const runner = new Runner({ address: `127.0.0.1:${server.grpcPort}`, workerId: "watch-new", logger: { debug() {}, info() {}, warn() {}, error() {} } });
  runner.start();
  try {
    const next = await stream.next();
    expect(next.value?.worker).toMatchObject({ workerId: "watch-new", status: WorkerStatus.IDLE });
    expect(next.value?.initial).toBe(false);
  } finally {
    abort.abort();
    await runner.stop();
  }
});

it("serve --history-samples sets the samples kept per worker", () => {
  expect(parseServeArgs(["--history-samples", "30"], {}).historySamples).toBe(30);
  expect(parseServeArgs([], { RUNNERLINE_HISTORY_SAMPLES: "7" }).historySamples).toBe(7);
  expect(() => parseServeArgs(["--history-samples", "0"], {})).toThrow(/positive integer/);
  expect(() => parseServeArgs(["--history-samples", "1.5"], {})).toThrow(/positive integer/);
});
