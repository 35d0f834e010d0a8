import { fromJson } from "@bufbuild/protobuf";
import { durationFromMs, ValueSchema } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRunnerlineClients, type RunnerlineClients } from "../../src/client/clients.js";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { WorkerStatus } from "../../src/gen/runnerline/v1/worker_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { tempDatabasePath } from "../harness.js";
import { eventually } from "../polling.js";
import { type ScriptedRunner, startScriptedRunner } from "./scripted-runner.js";

/**
 * A scripted scenario, then one scrape of /metrics, parsed, with the counts
 * the scenario must have produced; the fleet summary and the event log of the
 * same run are checked alongside.
 */
let server: RunningServer;
let clients: RunnerlineClients;
let metricsUrl: string;
const lines: string[] = [];
let steady: ScriptedRunner;
let silent: ScriptedRunner;

/** Prometheus text format → "name{label="v",…}" → value (labels sorted). */
function parseMetrics(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (match === null) throw new Error(`not a sample line: ${line}`);
    const labels = (match[2] ?? "")
      .split(/,(?=[a-zA-Z_]+=")/)
      .filter((l) => l !== "")
      .sort()
      .join(",");
    samples.set(labels === "" ? match[1]! : `${match[1]}{${labels}}`, Number(match[3]));
  }
  return samples;
}

async function enqueue(rolloutId: string, outcome: string, config: { maxAttempts?: number; retryOn?: AttemptStatus[]; timeoutMs?: number } = {}) {
  await clients.rollouts.enqueueRollout({
    rolloutId,
    input: fromJson(ValueSchema, { outcome }),
    config: {
      maxAttempts: config.maxAttempts ?? 1,
      retryOn: config.retryOn ?? [],
      timeout: config.timeoutMs === undefined ? undefined : durationFromMs(config.timeoutMs),
    },
  });
}

beforeAll(async () => {
  server = await startServer({
    grpcAddress: "127.0.0.1:0",
    httpAddress: "127.0.0.1:0",
    store: `sqlite:${tempDatabasePath()}`,
    log: (line) => lines.push(line),
  });
  const address = `127.0.0.1:${server.grpcPort}`;
  clients = createRunnerlineClients({ baseUrl: `http://${address}` });
  metricsUrl = `http://127.0.0.1:${server.httpPort}/metrics`;

  // 1. Cancelled while queued (no runner yet): never dispatched.
  await enqueue("m-cancel", "succeed");
  await clients.rollouts.cancelRollout({ rolloutId: "m-cancel" });
  // 2. Two successes and one rollout that fails twice (a retry) on the steady runner.
  steady = await startScriptedRunner(address, "m-steady");
  await enqueue("m-ok-1", "succeed");
  await enqueue("m-ok-2", "succeed");
  await enqueue("m-fail", "fail", { maxAttempts: 2, retryOn: [AttemptStatus.FAILED] });
  await clients.rollouts.waitRollouts({ rolloutIds: ["m-ok-1", "m-ok-2", "m-fail"] });
  await steady.leave();
  // 3. One that times out on a runner that never reports; that runner then drops.
  silent = await startScriptedRunner(address, "m-silent");
  await enqueue("m-timeout", "silent", { timeoutMs: 200 });
  await clients.rollouts.waitRollouts({ rolloutIds: ["m-timeout"] });
  silent.heartbeat();
  silent.heartbeat();
  silent.heartbeat();
  await eventually(() => clients.workers.getWorker({ workerId: "m-silent" }), (r) => r.worker?.lastHeartbeatTime !== undefined && server.fleet.heartbeats === 5);
  silent.drop();
  await eventually(() => clients.workers.getWorker({ workerId: "m-silent" }), (r) => r.worker?.connected === false);
  await eventually(() => clients.workers.getWorker({ workerId: "m-steady" }), (r) => r.worker?.status === WorkerStatus.OFFLINE);
  // 4. A call that fails, for the RPC histogram's code label.
  await clients.rollouts.getRollout({ rolloutId: "m-missing" }).catch(() => undefined);
});

afterAll(async () => {
  await server.close();
});

describe("GET /metrics after a scripted scenario", () => {
  it("shows exactly what happened", async () => {
    const response = await fetch(metricsUrl);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/plain; version=0.0.4/);
    const m = parseMetrics(await response.text());
    const expected: Record<string, number> = {
      'runnerline_rollouts{status="succeeded"}': 2,
      'runnerline_rollouts{status="failed"}': 2,
      'runnerline_rollouts{status="cancelled"}': 1,
      'runnerline_rollouts{status="queuing"}': 0,
      'runnerline_rollouts{status="running"}': 0,
      'runnerline_attempts_ended_total{outcome="succeeded"}': 2,
      'runnerline_attempts_ended_total{outcome="failed"}': 2,
      'runnerline_attempts_ended_total{outcome="timeout"}': 1,
      'runnerline_watchdog_verdicts_total{kind="timeout"}': 1,
      'runnerline_watchdog_verdicts_total{kind="unresponsive"}': 0,
      'runnerline_workers{status="offline"}': 1,
      'runnerline_workers{status="unknown"}': 1,
      'runnerline_workers{status="idle"}': 0,
      'runnerline_workers{status="busy"}': 0,
      runnerline_sessions_connected: 0,
      runnerline_capacity_slots: 0,
      runnerline_capacity_used_slots: 0,
      runnerline_queue_depth: 0,
      runnerline_queue_oldest_age_seconds: 0,
      runnerline_workers_quarantined: 0,
      runnerline_rollouts_unroutable: 0,
      // 2 at Welcome (one per runner) + 3 sent by the script.
      runnerline_heartbeats_received_total: 5,
      // m-ok-1, m-ok-2, m-fail twice, m-timeout.
      runnerline_dispatch_latency_seconds_count: 5,
      'runnerline_attempt_duration_seconds_count{outcome="succeeded"}': 2,
      'runnerline_attempt_duration_seconds_count{outcome="failed"}': 2,
      'runnerline_attempt_duration_seconds_count{outcome="timeout"}': 1,
      'runnerline_rpc_duration_seconds_count{code="OK",method="runnerline.v1.RolloutService/EnqueueRollout"}': 5,
      'runnerline_rpc_duration_seconds_count{code="OK",method="runnerline.v1.RolloutService/CancelRollout"}': 1,
      'runnerline_rpc_duration_seconds_count{code="NOT_FOUND",method="runnerline.v1.RolloutService/GetRollout"}': 1,
    };
    for (const [name, value] of Object.entries(expected)) expect([name, m.get(name)]).toEqual([name, value]);
    expect(m.get("runnerline_store_commit_seconds_count")).toBeGreaterThan(0);
    // No per-worker series: nothing carries a worker id.
    expect([...m.keys()].filter((k) => k.includes("m-steady") || k.includes("m-silent"))).toEqual([]);
  });

  it("GetFleetSummary agrees", async () => {
    const { summary } = await clients.workers.getFleetSummary({});
    expect(summary?.workers).toMatchObject({ total: 2, idle: 0, busy: 0, unknown: 1, offline: 1, connected: 0, quarantined: 0 });
    expect(summary?.rollouts).toMatchObject({ total: 5, succeeded: 2, failed: 2, cancelled: 1, queuing: 0, running: 0 });
    expect(summary?.queueDepth).toBe(0);
    expect(summary?.oldestQueuedAge).toBeUndefined();
  });

  it("logged one line per retry, timeout, cancel and failed rollout, with ids, and none per heartbeat", () => {
    const count = (pattern: RegExp) => lines.filter((l) => pattern.test(l)).length;
    expect(count(/^rollout retrying rolloutId=m-fail attemptCount=1/)).toBe(1);
    expect(count(/^attempt timed out attemptId=\S+ rolloutId=m-timeout workerId=m-silent/)).toBe(1);
    expect(count(/^rollout cancelled rolloutId=m-cancel/)).toBe(1);
    expect(count(/^rollout failed rolloutId=m-fail/)).toBe(1);
    expect(count(/^rollout failed rolloutId=m-timeout/)).toBe(1);
    expect(count(/^attempt failed attemptId=\S+ rolloutId=m-fail/)).toBe(2);
    expect(count(/^session opened sessionId=\S+ workerId=m-(steady|silent)/)).toBe(2);
    expect(count(/^session closed/)).toBe(2);
    expect(count(/heartbeat/i)).toBe(0);
  });
});
