/**
 * `npm run bench [-- --quick] [--only ingest,ingest-fleet,saturation,dispatch,push,detection,peer]`
 *
 * Measures one Runnerline server process (a child process) under load from
 * separate load-generator processes speaking the real gRPC protocol, next to
 * baselines measured in the same run: a bare grpc-js echo server on the same
 * transport and codec, and a bare in-memory queue for dispatch. Every figure
 * comes with the server's CPU, RSS and event-loop delay; every scenario prints
 * a table row and a JSON line, with its ratio to the baseline and the targets
 * of issue 5 marked met or missed. The peer scenario (bench/peer.ts) compares
 * dispatch with BullMQ on a private Redis in the same run. PostgreSQL stores
 * run as one server or as a fleet of 3 replicas on a fresh database, with the
 * database's CPU beside the servers'. See docs/benchmarks.md.
 */
import { type ChildProcess, fork } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import { type Attempt, AttemptStatus, GetAttemptRequestSchema } from "../src/gen/runnerline/v1/attempt_pb.js";
import { EnqueueRolloutRequestSchema } from "../src/gen/runnerline/v1/rollout_pb.js";
import { GetWorkerRequestSchema, type Worker, WorkerStatus } from "../src/gen/runnerline/v1/worker_pb.js";
import { DEFAULT_POSTGRES_URL, Skipped } from "./lib/postgres.js";
import {
  type BenchStore,
  benchStores,
  isPostgresStore,
  LoadWorker,
  replicasOf,
  repoRoot,
  type ServerKind,
  type ServerSet,
  type ServerSetOptions,
  type SetSample,
  startServerSet,
} from "./lib/processes.js";
import type { ProbeSample } from "./lib/probe-sample.js";
import { type LatencySummary, sleep, summarize, waitUntil } from "./lib/stats.js";
import { type PeerMode, type PeerReport, runPeerScenario } from "./peer.js";
import {
  AttemptService,
  checkHeartbeatEncoding,
  HeartbeatEncoder,
  newChannel,
  RolloutService,
  SESSION_MESSAGES,
  type SessionMessages,
  syntheticSnapshot,
  unary,
  WorkerService,
  wallMs,
} from "./lib/wire.js";

const { values: flags } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    only: { type: "string" },
    "load-procs": { type: "string", default: "3" },
    json: { type: "string" },
    "cpu-prof": { type: "string" },
    /** Overrides, e.g. to profile one case: --ingest-sessions 10000 --dispatch-runners 64 --servers runnerline */
    "ingest-sessions": { type: "string" },
    "dispatch-runners": { type: "string" },
    "dispatch-stores": { type: "string" },
    "dispatch-label-sets": { type: "string" },
    servers: { type: "string" },
    "peer-jobs": { type: "string" },
    "peer-stores": { type: "string" },
    "peer-modes": { type: "string" },
    "push-stores": { type: "string" },
    /** Sessions of the ingest-fleet scenario, spread over 3 replicas. */
    "fleet-sessions": { type: "string" },
    /** Where PostgreSQL stores create their databases (a fresh one per measured server set). */
    postgres: { type: "string" },
    /** What the load generators' runners speak: lean (default), classic, or both (each Runnerline row in each). */
    "session-messages": { type: "string", default: "lean" },
    /** Runs the Runnerline server with bearer tokens on (docs/security.md), for the auth-on vs auth-off comparison. */
    auth: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (flags.help) {
  console.log(`usage: npm run bench -- [--quick] [--only ingest,ingest-fleet,saturation,dispatch,push,detection,peer]
                       [--load-procs 3] [--json results.jsonl] [--cpu-prof DIR]
                       [--ingest-sessions 1000,10000] [--fleet-sessions 3000]
                       [--dispatch-runners 64] [--dispatch-stores memory,sqlite,sqlite-full,postgres,postgres-3]
                       [--dispatch-label-sets 20 (0: skip the labelled dispatch row)]
                       [--push-stores memory,postgres,postgres-3] [--servers echo,runnerline]
                       [--peer-jobs 20000] [--peer-stores memory,sqlite,sqlite-full,postgres,postgres-3] [--peer-modes e2e,drain,retry]
                       [--postgres ${DEFAULT_POSTGRES_URL}] [--auth]
                       [--session-messages lean|classic|lean,classic]
stores: memory, sqlite, sqlite-full, postgres (1 server), postgres-3 (3 replicas on one database)`);
  process.exit(0);
}

if (flags.auth) useBenchTokens();

const quick = flags.quick;
function numbers(list: string | undefined): number[] | undefined {
  return list === undefined ? undefined : list.split(",").map(Number);
}
const servers = new Set((flags.servers ?? "echo,runnerline").split(","));
function sessionMessagesList(list: string): SessionMessages[] {
  const chosen = list.split(",");
  const unknown = chosen.filter((m) => !SESSION_MESSAGES.includes(m as SessionMessages));
  if (unknown.length > 0) throw new Error(`--session-messages: unknown ${unknown.join(", ")}; known: ${SESSION_MESSAGES.join(", ")}`);
  return chosen as SessionMessages[];
}
const plan = {
  ingestSessions: numbers(flags["ingest-sessions"]) ?? (quick ? [1000] : [1000, 5000, 10000]),
  ingestWarmS: quick ? 1 : 2,
  ingestMeasureS: quick ? 3 : 6,
  /** ingest-fleet: sessions spread over 3 PostgreSQL replicas, against one SQLite server holding a third of them. */
  fleetSessions: Number(flags["fleet-sessions"] ?? 3000),
  saturationSessions: quick ? 500 : 1000,
  saturationMeasureS: quick ? 2 : 5,
  dispatchRollouts: quick ? 4000 : 20000,
  dispatchRunners: numbers(flags["dispatch-runners"]) ?? (quick ? [64] : [8, 64, 512]),
  // "sqlite" is the server's default (synchronous=NORMAL), "sqlite-full" its --sqlite-synchronous full.
  dispatchStores: benchStores(flags["dispatch-stores"] ?? "memory,sqlite,sqlite-full"),
  dispatchBatch: 500,
  /** Extra dispatch row (memory store): rollouts require one of this many label sets, runners carry one each. */
  dispatchLabelSets: numbers(flags["dispatch-label-sets"])?.[0] ?? 20,
  pushRate: quick ? 100 : 200,
  pushCount: quick ? 200 : 1000,
  pushRunners: 16,
  pushStores: benchStores(flags["push-stores"] ?? "memory,postgres,postgres-3"),
  detectionIntervalS: 0.5,
  detectionGraces: quick ? [2] : [2, 3],
  peerJobs: Number(flags["peer-jobs"] ?? (quick ? 4000 : 20000)),
  peerStores: benchStores(flags["peer-stores"] ?? "memory,sqlite,sqlite-full"),
  peerModes: (flags["peer-modes"] ?? "e2e,drain,retry").split(",") as PeerMode[],
  /** Dispatch and peer rows are measured in each; push and the labelled dispatch row in the first. */
  sessionMessages: sessionMessagesList(flags["session-messages"]),
  postgresUrl: flags.postgres ?? DEFAULT_POSTGRES_URL,
};
/** Rows say how their runners spoke unless every row spoke the default. */
const messagesLabel = (messages: SessionMessages) =>
  plan.sessionMessages.length > 1 || messages !== "lean" ? `, ${messages} messages` : "";
const SCENARIOS = ["ingest", "ingest-fleet", "saturation", "dispatch", "push", "detection", "peer"];
const only = new Set((flags.only ?? SCENARIOS.join(",")).split(","));
const unknownScenarios = [...only].filter((name) => !SCENARIOS.includes(name));
if (unknownScenarios.length > 0) throw new Error(`--only: unknown ${unknownScenarios.join(", ")}; known: ${SCENARIOS.join(", ")}`);
const loadProcs = Math.max(1, Number(flags["load-procs"]));

// ---- results ----------------------------------------------------------------

/** Of the measured server, or for a fleet of its replicas together: CPU and RSS summed, loop delay the worst. */
interface ServerFigures {
  cpuPct: number;
  rssMB: number;
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
}

interface Row {
  scenario: string;
  variant: string;
  server: ServerKind | "bullmq" | "graphile-worker";
  store?: string;
  metrics: Record<string, number>;
  serverFigures: ServerFigures;
  ratios?: Record<string, number>;
  targets?: { name: string; met: boolean }[];
  note?: string;
  /** A fleet's rows: each replica's CPU seconds over the measured window (their sum is metrics.serverCpuS). */
  replicaCpuS?: number[];
  /** ingest-fleet: heartbeats each replica acknowledged per CPU-second of its own. */
  replicaPerCpuS?: number[];
  /** Dispatch and peer in a fleet: the rollouts (jobs) that runners of each replica completed. */
  replicaRollouts?: number[];
}

const rows: Row[] = [];

const cpuSeconds = (before: ProbeSample, after: ProbeSample) =>
  (after.cpuUserUs + after.cpuSystemUs - before.cpuUserUs - before.cpuSystemUs) / 1e6;

interface SetFigures {
  figures: ServerFigures;
  /** CPU seconds of the server processes over the window, summed, and per process. */
  serverCpuS: number;
  replicaCpuS: number[];
  /** CPU seconds of the machine's postgres processes over the window (PostgreSQL stores). */
  dbCpuS: number | undefined;
}

function setFigures(before: SetSample, after: SetSample, seconds: number): SetFigures {
  const replicaCpuS = after.servers.map((sample, i) => cpuSeconds(before.servers[i]!, sample));
  const serverCpuS = replicaCpuS.reduce((a, b) => a + b, 0);
  return {
    figures: {
      cpuPct: (100 * serverCpuS) / seconds,
      rssMB: after.servers.reduce((sum, sample) => sum + sample.rssBytes, 0) / 2 ** 20,
      loopDelayP99Ms: Math.max(...after.servers.map((sample) => sample.loopDelayP99Ms)),
      loopDelayMaxMs: Math.max(...after.servers.map((sample) => sample.loopDelayMaxMs)),
    },
    serverCpuS,
    replicaCpuS,
    dbCpuS: after.dbCpuS !== undefined && before.dbCpuS !== undefined ? after.dbCpuS - before.dbCpuS : undefined,
  };
}

/** The CPU figures a row carries: server CPU-s, the database's, and per replica where there are several. */
function cpuMetrics(f: SetFigures): { metrics: Record<string, number>; replicaCpuS?: number[] } {
  return {
    metrics: { serverCpuS: f.serverCpuS, ...(f.dbCpuS !== undefined && { dbCpuS: f.dbCpuS }) },
    ...(f.replicaCpuS.length > 1 && { replicaCpuS: f.replicaCpuS }),
  };
}

function record(row: Row): void {
  rows.push(row);
  const line = JSON.stringify({ bench: "runnerline", quick, ...row });
  console.log(line);
  if (flags.json) appendFileSync(flags.json, `${line}\n`);
}

/** A row without figures: "skipped: …" where something it needs is missing (Skipped), else "not measured: …". */
function notMeasured(scenario: string, variant: string, server: Row["server"], store: string | undefined, error: unknown): void {
  const text = error instanceof Error ? error.message : String(error);
  const note = (error instanceof Skipped || text.startsWith("skipped: ") ? text : `not measured: ${text}`).slice(0, 300);
  record({
    scenario,
    variant,
    server,
    ...(store !== undefined && { store }),
    metrics: {},
    serverFigures: { cpuPct: NaN, rssMB: NaN, loopDelayP99Ms: NaN, loopDelayMaxMs: NaN },
    note,
  });
}

// ---- load workers -----------------------------------------------------------

const workers = Array.from({ length: loadProcs }, (_, i) => new LoadWorker(i));

/** Splits `total` as evenly as possible over the load workers. */
const shares = (total: number) => workers.map((_, i) => Math.floor(total / loadProcs) + (i < total % loadProcs ? 1 : 0));

/**
 * Opens `total` sessions, split evenly over the load workers; each worker splits its share evenly over `addresses`
 * (a fleet's replicas; the remainders rotate, so that the replicas' totals differ by at most one per worker).
 * Worker ids are `${prefix}-${n}` with n unique across the whole call.
 */
async function connectAll(addresses: string[], total: number, role: "beat" | "runner", prefix: string, messages = plan.sessionMessages[0]!) {
  const parts = shares(total);
  let first = 0;
  const results = await Promise.all(
    workers.map(async (worker, i) => {
      const count = parts[i]!;
      let start = first;
      first += count;
      let opened = 0;
      for (let r = 0; r < addresses.length; r++) {
        const rotated = (((r - i) % addresses.length) + addresses.length) % addresses.length;
        const n = Math.floor(count / addresses.length) + (rotated < count % addresses.length ? 1 : 0);
        if (n === 0) continue;
        // A few HTTP/2 connections per process and server, ~1500 streams each at most.
        const channels = Math.max(1, Math.min(4, Math.ceil(n / 1500), n));
        const result = await worker.call<{ opened: number; failed: number; ms: number }>(
          "connect",
          { address: addresses[r], count: n, prefix, channels, role, first: start, messages },
          180_000,
        );
        start += n;
        opened += result.opened;
      }
      return { opened };
    }),
  );
  const opened = results.reduce((sum, r) => sum + r.opened, 0);
  if (opened < total) throw new Error(`only ${opened} of ${total} sessions opened`);
  return opened;
}

const closeAll = () => Promise.all(workers.map((w) => w.call("closeAll")));

/** Starts the server (or a fleet's replicas, on a fresh database), runs `body`, closes every session and stops it. */
async function withServer<T>(options: ServerSetOptions, body: (server: ServerSet) => Promise<T>): Promise<T> {
  const server = await startServerSet({
    postgresUrl: plan.postgresUrl,
    ...options,
    ...(options.kind === "runnerline" && flags["cpu-prof"] && { cpuProfDir: flags["cpu-prof"] }),
  });
  try {
    return await body(server);
  } catch (error) {
    const tail = server.stderrTail().trim();
    throw new Error(`${error instanceof Error ? error.message : String(error)}${tail ? ` (server stderr: ${tail.slice(-300)})` : ""}`);
  } finally {
    await closeAll().catch(() => undefined);
    await server.stop();
  }
}

// ---- ingest -------------------------------------------------------------------

interface IngestResult {
  rate: number;
  perCpuS: number;
  p50: number;
  p99: number;
  /** Connected, Hello answered, no heartbeats yet; after a full GC. */
  idleRssPerSessionKB: number;
  /** While beating at the measured rate, garbage included. */
  rssPerSessionKB: number;
  figures: ServerFigures;
  cpu: SetFigures;
  /** Heartbeats acknowledged by each server process per CPU-second of that process, in order. */
  replicaPerCpuS: number[];
  sent: number;
  skipped: number;
}

const rssOf = (sample: SetSample) => sample.servers.reduce((sum, s) => sum + s.rssBytes, 0);

async function ingest(
  kind: ServerKind,
  sessions: number,
  saturate: boolean,
  store: BenchStore = "memory",
  heartbeatGraceS?: number,
): Promise<IngestResult> {
  return withServer({ kind, store, heartbeatIntervalS: 1, ...(heartbeatGraceS !== undefined && { heartbeatGraceS }) }, async (server) => {
    const empty = await server.sample({ gc: true });
    await connectAll(server.addresses, sessions, "beat", `ingest-${kind}`);
    await sleep(500);
    const connected = await server.sample({ gc: true });
    await Promise.all(workers.map((w) => w.call(saturate ? "saturateStart" : "beatStart", { rateHz: 1 })));
    await sleep((saturate ? 1 : plan.ingestWarmS) * 1000);
    await Promise.all(workers.map((w) => w.call("reset")));
    const before = await server.sample();
    const started = wallMs();
    await sleep((saturate ? plan.saturationMeasureS : plan.ingestMeasureS) * 1000);
    const after = await server.sample();
    const seconds = (wallMs() - started) / 1000;
    const reads = await Promise.all(
      workers.map((w) =>
        w.call<{ acked: number; ackedByAddress: Record<string, number>; sent: number; skipped: number; samples: number[] }>("read"),
      ),
    );
    await Promise.all(workers.map((w) => w.call("beatStop")));
    const acked = reads.reduce((sum, r) => sum + r.acked, 0);
    const latency = summarize(reads.flatMap((r) => r.samples));
    const cpu = setFigures(before, after, seconds);
    const ackedBy = (address: string) => reads.reduce((sum, r) => sum + (r.ackedByAddress[address] ?? 0), 0);
    return {
      rate: acked / seconds,
      perCpuS: acked / cpu.serverCpuS,
      p50: latency.p50,
      p99: latency.p99,
      rssPerSessionKB: (rssOf(after) - rssOf(empty)) / sessions / 1024,
      idleRssPerSessionKB: (rssOf(connected) - rssOf(empty)) / sessions / 1024,
      figures: cpu.figures,
      cpu,
      replicaPerCpuS: server.addresses.map((address, i) => ackedBy(address) / cpu.replicaCpuS[i]!),
      sent: reads.reduce((sum, r) => sum + r.sent, 0),
      skipped: reads.reduce((sum, r) => sum + r.skipped, 0),
    };
  });
}

async function ingestScenario(sessions: number, saturate: boolean): Promise<void> {
  const scenario = saturate ? "saturation" : "ingest";
  const variant = saturate ? `N=${sessions} closed-loop` : `N=${sessions} @1Hz`;
  let echo: IngestResult | undefined;
  if (servers.has("echo")) try {
    echo = await ingest("echo", sessions, saturate);
    record(ingestRow(scenario, variant, "echo", echo));
  } catch (error) {
    notMeasured(scenario, variant, "echo", undefined, error);
  }
  if (servers.has("runnerline")) try {
    const real = await ingest("runnerline", sessions, saturate);
    const row = ingestRow(scenario, variant, "runnerline", real);
    if (echo !== undefined) {
      row.ratios = {
        rate: real.rate / echo.rate,
        perCpuS: real.perCpuS / echo.perCpuS,
        p99: real.p99 / echo.p99,
        rssPerSession: real.rssPerSessionKB / echo.rssPerSessionKB,
        idleRssPerSession: real.idleRssPerSessionKB / echo.idleRssPerSessionKB,
      };
      row.targets = [{ name: "≥60% of echo per CPU-s", met: real.perCpuS >= 0.6 * echo.perCpuS }];
      if (!saturate && sessions >= 10_000) {
        row.targets.push(
          { name: "keeps up at 1 Hz", met: real.rate >= 0.95 * sessions },
          { name: "p99 ack < 50 ms", met: real.p99 < 50 },
          { name: "idle RSS/session ≤ 1.25× echo", met: real.idleRssPerSessionKB <= 1.25 * echo.idleRssPerSessionKB },
        );
      }
    }
    record(row);
  } catch (error) {
    notMeasured(scenario, variant, "runnerline", "memory", error);
  }
}

function ingestRow(scenario: string, variant: string, server: ServerKind, r: IngestResult): Row {
  return {
    scenario,
    variant,
    server,
    ...(server === "runnerline" && { store: "memory" }),
    metrics: {
      heartbeatsPerS: r.rate,
      perServerCpuS: r.perCpuS,
      ackP50Ms: r.p50,
      ackP99Ms: r.p99,
      idleRssPerSessionKB: r.idleRssPerSessionKB,
      rssPerSessionKB: r.rssPerSessionKB,
      skipped: r.skipped,
    },
    serverFigures: r.figures,
  };
}

/**
 * ingest-fleet: N sessions beat at 1 Hz, spread over 3 replicas sharing one PostgreSQL database, against one SQLite
 * server holding N/3 of them (the same load per server process), in the same run. Heartbeats are acknowledged per
 * CPU-second of the replica that took them; the database's CPU over the window says whether it is on the path.
 * A control row runs three independent SQLite servers with N/3 sessions each at once: what three server processes
 * and their load cost each other on the same cores, with no database and no replication.
 */
/** ingest-fleet's heartbeat grace (see fleetIngestScenario). */
const FLEET_GRACE_S = 15;

async function fleetIngestScenario(sessions: number): Promise<void> {
  const replicas = 3;
  const perServer = Math.ceil(sessions / replicas);
  // Sessions wait between their Hello and the first beat for as long as connecting thousands of them takes: with the
  // default grace at 1 Hz (3 s) they would turn UNKNOWN meanwhile, and their first beats would revive them all at once
  // (on PostgreSQL a transaction each), inside the window. This scenario measures steady beating: every row allows
  // the silence that a production interval of 5 s allows (15 s).
  const graceS = FLEET_GRACE_S;
  const single = `N=${perServer} @1Hz, one server`;
  let sqlite: IngestResult | undefined;
  if (servers.has("runnerline")) try {
    sqlite = await ingest("runnerline", perServer, false, "sqlite", graceS);
    record(fleetIngestRow(single, "sqlite", sqlite));
  } catch (error) {
    notMeasured("ingest-fleet", single, "runnerline", "sqlite", error);
  }
  const separate = `N=${sessions} @1Hz over ${replicas} independent SQLite servers (~${perServer} each), the control`;
  let control: IngestResult | undefined;
  if (servers.has("runnerline")) try {
    control = await ingest("runnerline", sessions, false, "sqlite-x3", graceS);
    const row = fleetIngestRow(separate, "sqlite-x3", control);
    if (sqlite !== undefined) row.ratios = { perCpuS: control.perCpuS / sqlite.perCpuS, p99: control.p99 / sqlite.p99 };
    record(row);
  } catch (error) {
    notMeasured("ingest-fleet", separate, "runnerline", "sqlite-x3", error);
  }
  const fleet = `N=${sessions} @1Hz over ${replicas} replicas (~${perServer} each)`;
  if (servers.has("runnerline")) try {
    const real = await ingest("runnerline", sessions, false, "postgres-3", graceS);
    const row = fleetIngestRow(fleet, "postgres-3", real);
    if (sqlite !== undefined) {
      row.ratios = {
        perCpuS: real.perCpuS / sqlite.perCpuS,
        p99: real.p99 / sqlite.p99,
        ...(control !== undefined && { perCpuSVsControl: real.perCpuS / control.perCpuS }),
      };
      row.targets = [{ name: "per replica CPU-s within 10% of one SQLite server's", met: real.perCpuS >= 0.9 * sqlite.perCpuS }];
    }
    record(row);
  } catch (error) {
    notMeasured("ingest-fleet", fleet, "runnerline", "postgres-3", error);
  }
}

function fleetIngestRow(variant: string, store: BenchStore, r: IngestResult): Row {
  const cpu = cpuMetrics(r.cpu);
  return {
    scenario: "ingest-fleet",
    variant,
    server: "runnerline",
    store,
    metrics: {
      heartbeatsPerS: r.rate,
      perServerCpuS: r.perCpuS,
      ackP50Ms: r.p50,
      ackP99Ms: r.p99,
      skipped: r.skipped,
      ...cpu.metrics,
    },
    serverFigures: r.figures,
    ...(cpu.replicaCpuS !== undefined && { replicaCpuS: cpu.replicaCpuS, replicaPerCpuS: r.replicaPerCpuS }),
  };
}

// ---- dispatch -----------------------------------------------------------------

interface DispatchResult {
  rate: number;
  perCpuS: number;
  seconds: number;
  enqueueS: number;
  figures: ServerFigures;
  cpu: SetFigures;
  /** Fleets: rollouts assigned to the runners of each replica, in order. */
  replicaRollouts?: number[];
}

async function dispatch(
  kind: ServerKind,
  store: BenchStore,
  runners: number,
  total: number,
  labelSets = 0,
  messages = plan.sessionMessages[0]!,
): Promise<DispatchResult> {
  return withServer({ kind, store }, async (server) => {
    // Runners spread over a fleet's replicas; the producer enqueues on the first one.
    await connectAll(server.addresses, runners, "runner", `dispatch-${kind}`, messages);
    const producer = workers[workers.length - 1]!;
    await producer.call("prepareEnqueue", { total, batch: plan.dispatchBatch, prefix: `ro-${kind}`, labelSets });
    const progress = new Map<number, number>();
    for (const worker of workers) {
      worker.onEvent = (event) => {
        if (event.event === "progress") progress.set(event.worker as number, event.assigned as number);
      };
    }
    await Promise.all(workers.map((w) => w.call("arm")));
    await sleep(300); // credits granted: every runner is waiting
    const before = await server.sample();
    const started = wallMs();
    const enqueued = producer.call<{ ms: number }>("runEnqueue", { address: server.address, concurrency: 4 }, 300_000);
    const limitMs = Math.min(240_000, Math.max(30_000, total * 5));
    const sum = () => [...progress.values()].reduce((a, b) => a + b, 0);
    const done = await waitUntil(() => sum() >= total, limitMs, 5);
    const { ms: enqueueMs } = await enqueued;
    if (!done) throw new Error(`only ${sum()} of ${total} rollouts dispatched in ${limitMs / 1000} s`);
    const flushed = await Promise.all(
      workers.map((w) => w.call<{ finishedAt: number; assignedByAddress: Record<string, number> }>("flush")),
    );
    const finished = Math.max(...flushed.map((f) => f.finishedAt));
    const after = await server.sample();
    const seconds = (finished - started) / 1000;
    for (const worker of workers) worker.onEvent = () => {};
    const cpu = setFigures(before, after, seconds);
    return {
      rate: total / seconds,
      perCpuS: total / cpu.serverCpuS,
      seconds,
      enqueueS: enqueueMs / 1000,
      figures: cpu.figures,
      cpu,
      ...(server.addresses.length > 1 && {
        replicaRollouts: server.addresses.map((address) => flushed.reduce((sum, f) => sum + (f.assignedByAddress[address] ?? 0), 0)),
      }),
    };
  });
}

async function dispatchScenario(runners: number, stores: BenchStore[]): Promise<void> {
  const total = plan.dispatchRollouts;
  const variant = `M=${total} K=${runners}`;
  let echo: DispatchResult | undefined;
  if (servers.has("echo")) try {
    echo = await dispatch("echo", "memory", runners, total);
    record(dispatchRow(variant, "echo", undefined, echo));
  } catch (error) {
    notMeasured("dispatch", variant, "echo", undefined, error);
  }
  for (const store of servers.has("runnerline") ? stores : []) {
    // Each way of speaking measured back to back, then recorded, so that a lean row can carry its ratio to classic.
    const measured = new Map<SessionMessages, DispatchResult>();
    for (const messages of plan.sessionMessages) {
      try {
        measured.set(messages, await dispatch("runnerline", store, runners, total, 0, messages));
      } catch (error) {
        notMeasured("dispatch", `${variant}${messagesLabel(messages)}`, "runnerline", store, error);
      }
    }
    for (const [messages, real] of measured) {
      const row = dispatchRow(`${variant}${messagesLabel(messages)}`, "runnerline", store, real);
      row.ratios = {
        ...(echo !== undefined && { rate: real.rate / echo.rate, perCpuS: real.perCpuS / echo.perCpuS }),
        ...versusClassic(messages, real, measured.get("classic")),
      };
      if (runners === 64 && !isPostgresStore(store)) {
        // Issue 5's floors: memory 10k/s, SQLite (either setting) 5k/s.
        const floor = store === "memory" ? 10_000 : 5_000;
        row.targets = [{ name: `≥${floor / 1000}k rollouts/s`, met: real.rate >= floor }];
      }
      record(row);
    }
  }
  const labelSets = plan.dispatchLabelSets;
  if (labelSets > 0 && servers.has("runnerline") && stores.includes("memory") && runners >= labelSets) {
    const labelled = `${variant}, ${labelSets} label sets${messagesLabel(plan.sessionMessages[0]!)}`;
    try {
      const real = await dispatch("runnerline", "memory", runners, total, labelSets);
      const row = dispatchRow(labelled, "runnerline", "memory", real);
      if (echo !== undefined) row.ratios = { rate: real.rate / echo.rate, perCpuS: real.perCpuS / echo.perCpuS };
      record(row);
    } catch (error) {
      notMeasured("dispatch", labelled, "runnerline", "memory", error);
    }
  }
}

/** A lean row carries its ratios to the classic row of the same case, when both were measured. */
function versusClassic(
  messages: SessionMessages,
  real: { rate: number; perCpuS: number },
  classic: { rate: number; perCpuS: number } | undefined,
): Record<string, number> {
  if (messages !== "lean" || classic === undefined) return {};
  return { rateVsClassic: real.rate / classic.rate, perCpuSVsClassic: real.perCpuS / classic.perCpuS };
}

function dispatchRow(variant: string, server: ServerKind, store: string | undefined, r: DispatchResult): Row {
  const cpu = cpuMetrics(r.cpu);
  return {
    scenario: "dispatch",
    variant,
    server,
    ...(store !== undefined && { store }),
    metrics: {
      rolloutsPerS: r.rate,
      perServerCpuS: r.perCpuS,
      seconds: r.seconds,
      enqueueSeconds: r.enqueueS,
      ...cpu.metrics,
      // Rollouts per CPU-second of the servers and the database together (PostgreSQL stores).
      ...(r.cpu.dbCpuS !== undefined && { perServerAndDbCpuS: (r.rate * r.seconds) / (r.cpu.serverCpuS + r.cpu.dbCpuS) }),
    },
    serverFigures: r.figures,
    ...(cpu.replicaCpuS !== undefined && { replicaCpuS: cpu.replicaCpuS }),
    ...(r.replicaRollouts !== undefined && { replicaRollouts: r.replicaRollouts }),
  };
}

// ---- push latency -------------------------------------------------------------

/**
 * Where the push scenario's runners wait: on the one server; or, in a fleet, on the replicas other than the first
 * (every push must cross from the replica that took the enqueue to another), or spread over all of them.
 */
type Placement = "one" | "others" | "spread";

interface PushResult {
  placement: Placement;
  latency: LatencySummary;
  /** The pushes received by runners on another server than the one that took the enqueue (fleets). */
  crossed: LatencySummary;
  lost: number;
  figures: ServerFigures;
  cpu: SetFigures;
}

/** One placement on a fresh server set (a push that no runner took must not be waiting for the next placement's). */
async function pushLatency(kind: ServerKind, store: BenchStore, placement: Placement): Promise<PushResult> {
  return withServer({ kind, store }, async (server) => {
    const worker = workers[0]!;
    const addresses = placement === "others" ? server.addresses.slice(1) : server.addresses;
    const prefix = `push-${kind}-${placement}`;
    // All runners in the process that enqueues, so that both ends read one clock; round-robin over the servers.
    let first = 0;
    for (const [r, address] of addresses.entries()) {
      const count = Math.floor(plan.pushRunners / addresses.length) + (r < plan.pushRunners % addresses.length ? 1 : 0);
      await worker.call("connect", { address, count, prefix, channels: 1, role: "runner", first, messages: plan.sessionMessages[0] });
      first += count;
    }
    await worker.call("arm");
    await sleep(300);
    const before = await server.sample();
    const started = wallMs();
    // Enqueues go to the first server.
    const result = await worker.call<{ samples: number[]; receivedAt: string[]; lost: number; failures: number }>(
      "push",
      { address: server.address, rate: plan.pushRate, count: plan.pushCount, prefix },
      120_000,
    );
    const after = await server.sample();
    if (result.failures > 0) throw new Error(`${result.failures} enqueues failed`);
    const cpu = setFigures(before, after, (wallMs() - started) / 1000);
    return {
      placement,
      latency: summarize(result.samples),
      crossed: summarize(result.samples.filter((_, i) => result.receivedAt[i] !== server.address)),
      lost: result.lost,
      figures: cpu.figures,
      cpu,
    };
  });
}

async function pushScenario(): Promise<void> {
  const base = `${plan.pushRate}/s × ${plan.pushCount}, ${plan.pushRunners} waiting`;
  const placementLabel: Record<Placement, string> = {
    one: "",
    others: ", on replicas 2–3 (each push crosses)",
    spread: ", spread over all (enqueue on replica 1)",
  };
  let echoP99: number | undefined;
  /** The single PostgreSQL server's p99 in this run, which the fleet's is held against. */
  let singlePostgresP99: number | undefined;
  const cases: [ServerKind, BenchStore | undefined][] = [
    ...(servers.has("echo") ? [["echo", undefined] as [ServerKind, undefined]] : []),
    ...(servers.has("runnerline") ? plan.pushStores.map((store) => ["runnerline", store] as [ServerKind, BenchStore]) : []),
  ];
  for (const [kind, store] of cases) {
    const placements: Placement[] = replicasOf(store) > 1 ? ["others", "spread"] : ["one"];
    for (const placement of placements) {
      const variant = `${base}${placementLabel[placement]}`;
      try {
        const r = await pushLatency(kind, store ?? "memory", placement);
        const cpu = cpuMetrics(r.cpu);
        const row: Row = {
          scenario: "push",
          variant,
          server: kind,
          ...(store !== undefined && { store }),
          metrics: {
            p50Ms: r.latency.p50,
            p99Ms: r.latency.p99,
            maxMs: r.latency.max,
            samples: r.latency.count,
            lost: r.lost,
            ...(r.placement === "spread" && { crossed: r.crossed.count, crossedP99Ms: r.crossed.p99 }),
            ...cpu.metrics,
          },
          serverFigures: r.figures,
          ...(cpu.replicaCpuS !== undefined && { replicaCpuS: cpu.replicaCpuS }),
        };
        if (kind === "echo") echoP99 = r.latency.p99;
        else {
          row.ratios = {
            ...(echoP99 !== undefined && { p99: r.latency.p99 / echoP99 }),
            ...(r.placement !== "one" && singlePostgresP99 !== undefined && { p99VsSingle: r.latency.p99 / singlePostgresP99 }),
          };
          if (store === "postgres") singlePostgresP99 = r.latency.p99;
          if (store === "memory") row.targets = [{ name: "p99 < 5 ms", met: r.latency.p99 < 5 && r.lost === 0 }];
          if (r.placement === "others" && singlePostgresP99 !== undefined) {
            row.targets = [{ name: "p99 across replicas ≤ 3× one server's, none lost", met: r.lost === 0 && r.latency.p99 <= 3 * singlePostgresP99 }];
          }
        }
        record(row);
      } catch (error) {
        notMeasured("push", variant, kind, store, error);
      }
    }
  }
}

// ---- detection ----------------------------------------------------------------

function spawnDetectRunner(address: string, workerId: string, intervalMs: number): ChildProcess {
  return fork("bench/detect-runner.ts", [address, workerId, String(intervalMs)], {
    cwd: repoRoot,
    execArgv: ["--import", "tsx"],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
}

function nextEvent<T>(child: ChildProcess, name: string, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${name} from the runner in ${timeoutMs} ms`)), timeoutMs);
    const onMessage = (message: { event?: string }) => {
      if (message?.event !== name) return;
      clearTimeout(timer);
      child.off("message", onMessage);
      resolve(message as T);
    };
    child.on("message", onMessage);
  });
}

async function detectionScenario(graceIntervals: number): Promise<void> {
  const intervalS = plan.detectionIntervalS;
  const graceMs = graceIntervals * intervalS * 1000;
  const variant = `interval ${intervalS * 1000} ms, grace ${graceMs} ms`;
  const children: ChildProcess[] = [];
  try {
    await withServer({ kind: "runnerline", store: "memory", heartbeatIntervalS: intervalS, heartbeatGraceS: graceMs / 1000 }, async (server) => {
      const client = newChannel(server.address);
      const cases = [] as { how: "die" | "hang"; workerId: string; child: ChildProcess; attemptId: string }[];
      for (const how of ["die", "hang"] as const) {
        const workerId = `detect-${how}`;
        const child = spawnDetectRunner(server.address, workerId, intervalS * 1000);
        children.push(child);
        const holding = nextEvent<{ attemptId: string }>(child, "holding", 30_000);
        await sleep(200);
        await unary(client, RolloutService, "enqueueRollout", create(EnqueueRolloutRequestSchema, { rolloutId: `rollout-${how}`, input: { kind: { case: "stringValue", value: how } } }));
        cases.push({ how, workerId, child, attemptId: (await holding).attemptId });
      }
      await sleep(3 * intervalS * 1000);
      const silences = cases.map((c) => nextEvent<{ lastBeatAt: number }>(c.child, "silent", 5_000));
      for (const c of cases) c.child.send({ command: c.how });
      const silentAt = await Promise.all(silences);
      const hung = cases.find((c) => c.how === "hang")!;
      hung.child.kill("SIGSTOP");
      const seen = cases.map(() => ({ unknownAt: NaN, unresponsiveAt: NaN }));
      const deadline = Date.now() + Math.max(10_000, 6 * graceMs);
      while (Date.now() < deadline && seen.some((s) => Number.isNaN(s.unknownAt) || Number.isNaN(s.unresponsiveAt))) {
        await Promise.all(
          cases.map(async (c, i) => {
            const [{ worker }, { attempt }] = await Promise.all([
              unary<object, { worker?: Worker }>(client, WorkerService, "getWorker", create(GetWorkerRequestSchema, { workerId: c.workerId })),
              unary<object, { attempt?: Attempt }>(client, AttemptService, "getAttempt", create(GetAttemptRequestSchema, { attemptId: c.attemptId })),
            ]);
            const now = wallMs();
            if (Number.isNaN(seen[i]!.unknownAt) && worker?.status === WorkerStatus.UNKNOWN) seen[i]!.unknownAt = now;
            if (Number.isNaN(seen[i]!.unresponsiveAt) && attempt?.status === AttemptStatus.UNRESPONSIVE) seen[i]!.unresponsiveAt = now;
          }),
        );
        await sleep(10);
      }
      client.close();
      const limitMs = 3 * intervalS * 1000;
      const sample = (await server.sample()).servers[0]!;
      cases.forEach((c, i) => {
        const from = silentAt[i]!.lastBeatAt;
        const unknownMs = seen[i]!.unknownAt - from;
        const unresponsiveMs = seen[i]!.unresponsiveAt - from;
        // With the default grace (3 intervals) the server cannot, by its own
        // rule, call a runner lost before 3 intervals; what it adds is the watchdog's tick.
        const bound = graceIntervals >= 3 ? graceMs + (intervalS * 1000) / 5 : limitMs;
        record({
          scenario: "detection",
          variant: `${c.how === "die" ? "killed (socket closed)" : "hung (socket open, silent)"}; ${variant}`,
          server: "runnerline",
          store: "memory",
          metrics: { workerUnknownMs: unknownMs, attemptUnresponsiveMs: unresponsiveMs, graceMs, intervalMs: intervalS * 1000 },
          serverFigures: { cpuPct: NaN, rssMB: sample.rssBytes / 2 ** 20, loopDelayP99Ms: sample.loopDelayP99Ms, loopDelayMaxMs: sample.loopDelayMaxMs },
          ratios: { workerUnknownVsGrace: unknownMs / graceMs, attemptUnresponsiveVsGrace: unresponsiveMs / graceMs },
          targets: [
            {
              name: graceIntervals >= 3 ? "≤ grace + 1 watchdog period" : "≤ 3 intervals",
              met: Math.max(unknownMs, unresponsiveMs) <= bound,
            },
          ],
        });
      });
    });
  } catch (error) {
    notMeasured("detection", variant, "runnerline", "memory", error);
  } finally {
    for (const child of children) child.kill("SIGKILL");
  }
}

// ---- tables -------------------------------------------------------------------

const fmt = (value: number | undefined, digits = 0) =>
  value === undefined || Number.isNaN(value) ? "–" : value.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });

function printTable(title: string, header: string[], lines: string[][]): void {
  if (lines.length === 0) return;
  console.log(`\n### ${title}\n`);
  console.log(`| ${header.join(" | ")} |`);
  console.log(`|${header.map(() => "---").join("|")}|`);
  for (const line of lines) console.log(`| ${line.join(" | ")} |`);
}

const serverCols = (r: Row) => [fmt(r.serverFigures.cpuPct), fmt(r.serverFigures.rssMB), fmt(r.serverFigures.loopDelayP99Ms, 1), fmt(r.serverFigures.loopDelayMaxMs, 1)];
const serverHeader = ["srv CPU %", "srv RSS MB", "loop p99 ms", "loop max ms"];
const targetsOf = (r: Row) =>
  r.note ?? (r.targets ?? []).map((t) => `${t.met ? "met" : "**MISSED**"}: ${t.name}`).join("; ");
const ratio = (value: number | undefined) => (value === undefined || Number.isNaN(value) ? "–" : `${fmt(value, 2)}×`);
/** Server CPU seconds over the window; for a fleet the sum, then each replica's. */
const srvCpuS = (r: Row) =>
  `${fmt(r.metrics.serverCpuS, 2)}${r.replicaCpuS === undefined ? "" : ` (${r.replicaCpuS.map((v) => fmt(v, 2)).join(" + ")})`}`;
const cpuHeader = ["srv CPU-s (per replica)", "db CPU-s"];
const cpuCols = (r: Row) => [srvCpuS(r), fmt(r.metrics.dbCpuS, 2)];
/** A fleet's rollouts (jobs) completed by the runners of each replica. */
const perReplica = (r: Row) => (r.replicaRollouts === undefined ? "–" : r.replicaRollouts.map((n) => fmt(n)).join(" / "));

function printTables(): void {
  const by = (scenario: string) => rows.filter((r) => r.scenario === scenario);
  const label = (r: Row) => (r.server === "echo" ? "echo (baseline)" : `runnerline${r.store ? ` (${r.store})` : ""}`);
  for (const scenario of ["ingest", "saturation"]) {
    printTable(
      scenario === "ingest" ? "Heartbeat ingest (1 Hz per session)" : "Heartbeat ingest, saturation (each session beats as soon as acked)",
      ["scenario", "server", "heartbeats/s", "per srv CPU-s", "ack p50 ms", "ack p99 ms", "idle RSS/session KB", "beating RSS/session KB", ...serverHeader, "per CPU-s vs echo", "p99 vs echo", "idle RSS/session vs echo", "targets"],
      by(scenario).map((r) => [
        r.variant,
        label(r),
        fmt(r.metrics.heartbeatsPerS),
        fmt(r.metrics.perServerCpuS),
        fmt(r.metrics.ackP50Ms, 2),
        fmt(r.metrics.ackP99Ms, 2),
        fmt(r.metrics.idleRssPerSessionKB, 1),
        fmt(r.metrics.rssPerSessionKB, 1),
        ...serverCols(r),
        ratio(r.ratios?.perCpuS),
        ratio(r.ratios?.p99),
        ratio(r.ratios?.idleRssPerSession),
        targetsOf(r),
      ]),
    );
  }
  printTable(
    "Heartbeat ingest in a fleet (1 Hz per session; 3 PostgreSQL replicas against one SQLite server with the same sessions per server, and against 3 independent SQLite servers at once)",
    ["scenario", "server", "heartbeats/s", "per srv CPU-s", "per CPU-s of each replica", "ack p50 ms", "ack p99 ms", ...cpuHeader, ...serverHeader, "per CPU-s vs SQLite", "p99 vs SQLite", "per CPU-s vs 3 SQLite", "targets"],
    by("ingest-fleet").map((r) => [
      r.variant,
      label(r),
      fmt(r.metrics.heartbeatsPerS),
      fmt(r.metrics.perServerCpuS),
      r.replicaPerCpuS === undefined ? "–" : r.replicaPerCpuS.map((v) => fmt(v)).join(", "),
      fmt(r.metrics.ackP50Ms, 2),
      fmt(r.metrics.ackP99Ms, 2),
      ...cpuCols(r),
      ...serverCols(r),
      ratio(r.ratios?.perCpuS),
      ratio(r.ratios?.p99),
      ratio(r.ratios?.perCpuSVsControl),
      targetsOf(r),
    ]),
  );
  printTable(
    "Dispatch (enqueue in batches of 500 on the first server, K runners spread over the servers complete each at once)",
    ["scenario", "server", "rollouts/s", "per srv CPU-s", "per srv+db CPU-s", "total s", "done per replica", ...cpuHeader, ...serverHeader, "rate vs echo", "per CPU-s vs echo", "rate vs classic", "per CPU-s vs classic", "targets"],
    by("dispatch").map((r) => [
      r.variant,
      label(r),
      fmt(r.metrics.rolloutsPerS),
      fmt(r.metrics.perServerCpuS),
      fmt(r.metrics.perServerAndDbCpuS),
      fmt(r.metrics.seconds, 2),
      perReplica(r),
      ...cpuCols(r),
      ...serverCols(r),
      ratio(r.ratios?.rate),
      ratio(r.ratios?.perCpuS),
      ratio(r.ratios?.rateVsClassic),
      ratio(r.ratios?.perCpuSVsClassic),
      targetsOf(r),
    ]),
  );
  printTable(
    "Push latency (enqueue → assignment received, one rollout at a time)",
    ["scenario", "server", "p50 ms", "p99 ms", "max ms", "samples", "lost", "crossed: n, p99 ms", ...cpuHeader, ...serverHeader, "p99 vs echo", "p99 vs one PostgreSQL server", "targets"],
    by("push").map((r) => [
      r.variant,
      label(r),
      fmt(r.metrics.p50Ms, 2),
      fmt(r.metrics.p99Ms, 2),
      fmt(r.metrics.maxMs, 2),
      fmt(r.metrics.samples),
      fmt(r.metrics.lost),
      r.metrics.crossed === undefined ? "–" : `${fmt(r.metrics.crossed)}, ${fmt(r.metrics.crossedP99Ms, 2)}`,
      ...cpuCols(r),
      ...serverCols(r),
      ratio(r.ratios?.p99),
      ratio(r.ratios?.p99VsSingle),
      targetsOf(r),
    ]),
  );
  printTable(
    "Peer: BullMQ on Redis (AOF everysec) and graphile-worker on the same PostgreSQL vs Runnerline, 4 load processes × 50 consumers, batches of 1,000; a PostgreSQL dispatcher is its servers and the database; db µs/job counts the measured database's backends only",
    ["scenario", "dispatcher", "jobs/s", "jobs per dispatcher CPU-s", "total s", "enqueue s", "first done ms", "done per replica", "dispatcher CPU-s (per replica)", "db CPU-s", "db µs/job", "rate vs BullMQ", "per CPU-s vs BullMQ", "rate vs echo", "vs graphile batched: rate, enqueue s, db µs/job", "rate vs classic", "per CPU-s vs classic", "targets"],
    by("peer").map((r) => [
      r.variant,
      r.server === "bullmq" || r.server === "echo" || r.server === "graphile-worker" ? r.server : label(r),
      fmt(r.metrics.jobsPerS),
      fmt(r.metrics.perDispatcherCpuS),
      fmt(r.metrics.seconds, 2),
      fmt(r.metrics.enqueueSeconds, 2),
      fmt(r.metrics.firstDoneMs),
      perReplica(r),
      ...cpuCols(r),
      fmt(r.metrics.dbOwnCpuUsPerJob),
      ratio(r.ratios?.rate),
      ratio(r.ratios?.perCpuS),
      ratio(r.ratios?.rateVsEcho),
      r.ratios?.rateVsGraphile === undefined
        ? "–"
        : [ratio(r.ratios.rateVsGraphile), ratio(r.ratios.enqueueVsGraphile), ratio(r.ratios.dbCpuPerJobVsGraphile)].join(", "),
      ratio(r.ratios?.rateVsClassic),
      ratio(r.ratios?.perCpuSVsClassic),
      targetsOf(r),
    ]),
  );
  printTable(
    "Failure detection (from the runner's last heartbeat)",
    ["scenario", "worker UNKNOWN after ms", "attempt UNRESPONSIVE after ms", "grace ms", "UNKNOWN vs grace", "UNRESPONSIVE vs grace", "targets"],
    by("detection").map((r) => [
      r.variant,
      fmt(r.metrics.workerUnknownMs),
      fmt(r.metrics.attemptUnresponsiveMs),
      fmt(r.metrics.graceMs),
      ratio(r.ratios?.workerUnknownVsGrace),
      ratio(r.ratios?.attemptUnresponsiveVsGrace),
      targetsOf(r),
    ]),
  );
}

// ---- peer: BullMQ ---------------------------------------------------------------

async function peerScenario(): Promise<void> {
  const peerPlan = {
    total: plan.peerJobs,
    stores: plan.peerStores,
    modes: plan.peerModes,
    sessionMessages: plan.sessionMessages,
    cpuProfDir: flags["cpu-prof"],
    postgresUrl: plan.postgresUrl,
  };
  await runPeerScenario(peerPlan, (report: PeerReport) => {
    const variant = `M=${plan.peerJobs} ${report.mode}, ${report.variant}${report.messages === undefined ? "" : messagesLabel(report.messages)}`;
    const server = report.system;
    if (report.result === undefined) {
      notMeasured("peer", variant, server, report.store, report.error ?? "no result");
      return;
    }
    const r = report.result;
    record({
      scenario: "peer",
      variant,
      server,
      ...(report.store !== undefined && { store: report.store }),
      metrics: {
        jobsPerS: r.rate,
        perDispatcherCpuS: r.perCpuS,
        seconds: r.seconds,
        enqueueSeconds: r.enqueueS,
        ...(r.firstDoneMs !== undefined && { firstDoneMs: r.firstDoneMs }),
        serverCpuS: r.serverCpuS,
        ...(r.dbCpuS !== undefined && { dbCpuS: r.dbCpuS }),
        ...(r.dbOwnCpuS !== undefined && { dbOwnCpuUsPerJob: (r.dbOwnCpuS / r.jobs) * 1e6 }),
      },
      // The dispatcher's CPU is reported as jobs per CPU-second; the probe's other figures are not taken here.
      serverFigures: { cpuPct: NaN, rssMB: NaN, loopDelayP99Ms: NaN, loopDelayMaxMs: NaN },
      ratios: {
        ...(report.ratio !== undefined && { rate: report.ratio }),
        ...(report.perCpuRatio !== undefined && { perCpuS: report.perCpuRatio }),
        ...(report.echoRatio !== undefined && { rateVsEcho: report.echoRatio }),
        ...(report.versusGraphile !== undefined && {
          rateVsGraphile: report.versusGraphile.rate,
          enqueueVsGraphile: report.versusGraphile.enqueueS,
          ...(report.versusGraphile.dbOwnCpuPerJob !== undefined && { dbCpuPerJobVsGraphile: report.versusGraphile.dbOwnCpuPerJob }),
        }),
        ...report.versusClassic,
      },
      ...(report.targets !== undefined && { targets: report.targets }),
      ...(r.replicaCpuS.length > 1 && { replicaCpuS: r.replicaCpuS }),
      ...(r.replicaJobs !== undefined && { replicaRollouts: r.replicaJobs }),
    });
  });
}

// ---- main ---------------------------------------------------------------------

async function main(): Promise<void> {
  checkHeartbeatEncoding();
  const startedAt = Date.now();
  const snapshotBytes = new HeartbeatEncoder(syntheticSnapshot(1)).snapshotBytes;
  console.log(
    `runnerline bench${quick ? " (quick)" : ""}: ${loadProcs} load processes; heartbeat snapshot ${snapshotBytes} bytes (8 GPUs); node ${process.version}`,
  );
  if (only.has("ingest")) for (const n of plan.ingestSessions) await ingestScenario(n, false);
  if (only.has("ingest-fleet")) await fleetIngestScenario(plan.fleetSessions);
  if (only.has("saturation")) await ingestScenario(plan.saturationSessions, true);
  if (only.has("dispatch")) for (const k of plan.dispatchRunners) await dispatchScenario(k, plan.dispatchStores);
  if (only.has("push")) await pushScenario();
  if (only.has("detection")) for (const g of plan.detectionGraces) await detectionScenario(g);
  if (only.has("peer")) await peerScenario();
  printTables();
  const missed = rows.flatMap((r) => (r.targets ?? []).filter((t) => !t.met).map((t) => `${r.scenario} ${r.variant}: ${t.name}`));
  console.log(`\n${rows.length} rows in ${((Date.now() - startedAt) / 1000).toFixed(0)} s; targets missed: ${missed.length === 0 ? "none" : missed.join("; ")}`);
}

main()
  .catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  })
  .finally(async () => {
    await Promise.all(workers.map((w) => w.stop()));
  });

/** Writes an auth file for the bench and puts its tokens where the load processes (forked later) find them. */
function useBenchTokens() {
  const folder = mkdtempSync(join(tmpdir(), "runnerline-bench-auth-"));
  process.once("exit", () => rmSync(folder, { recursive: true, force: true }));
  const runner = randomBytes(24).toString("base64url");
  const admin = randomBytes(24).toString("base64url");
  const hash = (token: string) => createHash("sha256").update(token).digest("hex");
  const file = join(folder, "auth.json");
  writeFileSync(
    file,
    JSON.stringify({
      tokens: [
        { name: "bench-runners", role: "runner", sha256: hash(runner), workers: ["*"] },
        { name: "bench-admin", role: "admin", sha256: hash(admin) },
      ],
    }),
  );
  process.env.RUNNERLINE_BENCH_AUTH_FILE = file;
  process.env.RUNNERLINE_BENCH_RUNNER_TOKEN = runner;
  process.env.RUNNERLINE_BENCH_ADMIN_TOKEN = admin;
  console.log("bench: tokens on (runner token for sessions, admin token for unary calls)");
}
