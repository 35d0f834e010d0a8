/**
 * A real server with scripted runners for the browser tests and the
 * screenshot script: real runner sessions (src/client/runner.ts) with real
 * heartbeats carrying made-up but plausible telemetry, and handlers that do
 * what each rollout's input says (hold until released, fail, succeed).
 */
import { create, fromJson, type JsonObject, toJson } from "@bufbuild/protobuf";
import { durationFromMs, timestampNow, ValueSchema } from "@bufbuild/protobuf/wkt";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Runner, type RunnerLogger } from "../../src/client/runner.js";
import { AttemptService, AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutService } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { type SystemSnapshot, SystemSnapshotSchema } from "../../src/gen/runnerline/v1/telemetry_pb.js";
import { WorkerService } from "../../src/gen/runnerline/v1/worker_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import type { ServerOptions } from "../../src/server/config.js";
import { freePort } from "../polling.js";

export interface RunnerSpec {
  workerId: string;
  /** Where the runner dials (a TcpRelay in front of the server, to cut its connection); the server's by default. */
  address?: string;
  labels?: Record<string, string>;
  capacity?: number;
  gpus?: number;
}

export interface Fleet {
  server: RunningServer;
  baseUrl: string;
  grpcAddress: string;
  clients: ReturnType<typeof clientsFor>;
  runners: Map<string, Runner>;
  addRunner(spec: RunnerSpec): Runner;
  /** Lets every job whose input is {"hold": key} finish with SUCCEEDED and `result`. */
  release(key: string, result?: JsonObject): void;
  enqueue(rolloutId: string, input: unknown, config?: EnqueueOptions): Promise<void>;
  /** Stops the server and starts a new one (empty, in memory) on the same ports. */
  restartServer(downMs?: number): Promise<void>;
  close(): Promise<void>;
}

export interface EnqueueOptions {
  maxAttempts?: number;
  retryOnFailed?: boolean;
  /** Only runners carrying these labels may take it (RolloutConfig.required_labels). */
  requiredLabels?: Record<string, string>;
  priority?: number;
  /** Wait before a retry (RolloutConfig.retry_delay). */
  retryDelayMs?: number;
}

function clientsFor(baseUrl: string, token: string | undefined) {
  const withToken: Interceptor = (next) => (request) => {
    if (token !== undefined) request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
  const transport = createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors: [withToken] });
  return {
    workers: createClient(WorkerService, transport),
    rollouts: createClient(RolloutService, transport),
    attempts: createClient(AttemptService, transport),
  };
}

const GiB = 1024n ** 3n;

/** Telemetry that moves: a slow wave per host, so sparklines have a shape. */
function syntheticSnapshot(spec: RunnerSpec, beat: number): SystemSnapshot {
  const seed = [...spec.workerId].reduce((sum, ch) => sum + ch.charCodeAt(0), 0);
  const wave = (offset: number) => 50 + 40 * Math.sin((beat + seed + offset) / 3);
  return create(SystemSnapshotSchema, {
    collectTime: timestampNow(),
    hostname: `${spec.workerId}.lab`,
    os: "linux 6.1.0",
    cpu: { usagePercent: wave(0), logicalCores: 32, physicalCores: 16, loadAverage: [3.2, 2.9, 2.5], model: "AMD EPYC 7543" },
    memory: { totalBytes: 256n * GiB, usedBytes: BigInt(Math.round((wave(2) / 100) * 256)) * GiB, availableBytes: 100n * GiB },
    disks: [{ mount: "/", totalBytes: 2000n * GiB, usedBytes: 700n * GiB }],
    network: { rxBytesPerSecond: 12_500_000, txBytesPerSecond: 3_400_000 },
    gpus: Array.from({ length: spec.gpus ?? 0 }, (_, index) => ({
      index,
      name: "NVIDIA H100 80GB HBM3",
      utilizationPercent: Math.max(0, Math.min(100, wave(index * 5))),
      memoryUsedBytes: BigInt(Math.round(wave(index * 7) * 0.8)) * GiB,
      memoryTotalBytes: 80n * GiB,
      temperatureCelsius: 55 + index * 3,
      powerWatts: 420 + index * 15,
    })),
  });
}

export interface FleetOptions {
  heartbeatIntervalMs?: number;
  /** Makes the server require tokens (--auth-file). */
  authFile?: string;
  /** Sent by the scripted runners and the fleet's clients: a token that may act as every runner and enqueue (admin). */
  token?: string;
  /** More server options (a short --forget-after, say). */
  server?: Partial<ServerOptions>;
}

export async function startFleet(options: FleetOptions = {}): Promise<Fleet> {
  // Fixed ports, so that a restart comes back at the same address; a port found free can be taken by another test
  // process before the server binds it, so that is tried again with others.
  let grpcPort = 0;
  let httpPort = 0;
  let serverOptions: Parameters<typeof startServer>[0] | undefined;
  let started: RunningServer | undefined;
  for (let attempt = 1; started === undefined; attempt++) {
    grpcPort = await freePort();
    httpPort = await freePort();
    serverOptions = {
      grpcAddress: `127.0.0.1:${grpcPort}`,
      httpAddress: `127.0.0.1:${httpPort}`,
      store: "memory",
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? 400,
      drainTimeoutMs: 200,
      authFile: options.authFile,
      log: () => undefined,
      ...options.server,
    };
    try {
      started = await startServer(serverOptions);
    } catch (error) {
      if (attempt >= 5 || !/address already in use/.test(String(error))) throw error;
    }
  }
  let server: RunningServer = started;
  const restartOptions = serverOptions!;
  const baseUrl = `http://127.0.0.1:${httpPort}`;
  const grpcAddress = `127.0.0.1:${grpcPort}`;
  const clients = clientsFor(baseUrl, options.token);
  const runners = new Map<string, Runner>();
  const holds = new Map<string, { resolve: (result: JsonObject) => void; promise: Promise<JsonObject> }>();
  const hold = (key: string) => {
    let entry = holds.get(key);
    if (entry === undefined) {
      let resolve!: (result: JsonObject) => void;
      const promise = new Promise<JsonObject>((r) => (resolve = r));
      entry = { resolve, promise };
      holds.set(key, entry);
    }
    return entry;
  };
  const silent: RunnerLogger = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

  return {
    get server() {
      return server;
    },
    baseUrl,
    grpcAddress,
    clients,
    runners,
    addRunner(spec) {
      let beat = 0;
      const runner = new Runner({
        address: spec.address ?? grpcAddress,
        workerId: spec.workerId,
        labels: spec.labels,
        capacity: spec.capacity ?? 1,
        clientVersion: "scripted/1.0",
        token: options.token,
        collectSnapshot: async () => syntheticSnapshot(spec, beat++),
        reconnect: { initialDelayMs: 100, maxDelayMs: 500 },
        logger: silent,
      });
      runners.set(spec.workerId, runner);
      void runner.run(async (job) => {
        const input = job.rollout.input === undefined ? {} : (toJson(ValueSchema, job.rollout.input) as Record<string, unknown>);
        if (typeof input.fail === "string") throw new Error(input.fail);
        if (typeof input.hold === "string") return await hold(input.hold).promise;
        return { reward: 1 };
      });
      return runner;
    },
    release(key, result = { reward: 1 }) {
      hold(key).resolve(result);
    },
    async enqueue(rolloutId, input, config = {}) {
      await clients.rollouts.enqueueRollout({
        rolloutId,
        input: fromJson(ValueSchema, input as never),
        priority: config.priority ?? 0,
        config: {
          maxAttempts: config.maxAttempts ?? 1,
          retryOn: config.retryOnFailed ? [AttemptStatus.FAILED] : [],
          requiredLabels: config.requiredLabels ?? {},
          retryDelay: config.retryDelayMs === undefined ? undefined : durationFromMs(config.retryDelayMs),
        },
      });
    },
    async restartServer(downMs = 1_500) {
      await server.close();
      await new Promise((resolve) => setTimeout(resolve, downMs));
      server = await startServer(restartOptions);
    },
    async close() {
      for (const hold of holds.values()) hold.resolve({});
      await Promise.all([...runners.values()].map((r) => r.stop()));
      await server.close();
    },
  };
}
