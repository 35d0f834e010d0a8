/**
 * Child processes of the bench: the measured server (Runnerline or the bare
 * echo baseline, with the probe preloaded) and the load workers, each talked
 * to over the fork IPC channel with numbered requests.
 */
import { type ChildProcess, fork } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createBenchDatabase, DEFAULT_POSTGRES_URL, postgresCpuSeconds, requirePostgres } from "./postgres.js";
import type { ProbeSample } from "./probe-sample.js";

export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const probeUrl = pathToFileURL(fileURLToPath(new URL("./server-probe.mjs", import.meta.url))).href;

/**
 * The measured servers run as users run them, without a TypeScript loader in
 * the process (tsx's keepNames alone adds a call per closure created):
 * Runnerline from dist/ (built first when stale, as `npm start` does), the
 * echo baseline bundled once per run by esbuild into node_modules/.cache.
 */
let serverScripts: Promise<{ runnerline: string; echo: string }> | undefined;
function builtServers(): Promise<{ runnerline: string; echo: string }> {
  serverScripts ??= (async () => {
    const { build } = (await import("../../scripts/build.mjs")) as { build: (o: { ifStale: boolean }) => void };
    build({ ifStale: true });
    const esbuild = await import("esbuild");
    const echo = join(repoRoot, "node_modules", ".cache", "runnerline-bench", "echo-server.mjs");
    await esbuild.build({
      entryPoints: [join(repoRoot, "bench", "echo-server.ts")],
      outfile: echo,
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      packages: "external",
      logLevel: "warning",
    });
    return { runnerline: join(repoRoot, "dist", "cli", "main.js"), echo };
  })();
  return serverScripts;
}

export type ServerKind = "runnerline" | "echo";

/**
 * The stores the bench compares, by the names its rows carry, and the `serve` flags of each; a SQLite store gets a
 * fresh file in a folder of its own. "sqlite" is the server's default (synchronous=NORMAL), "sqlite-full" the
 * stronger setting (docs/storage.md says what each guarantees). "postgres" is one server on a fresh PostgreSQL
 * database, "postgres-3" three server processes (replicas) sharing one fresh database (startServerSet).
 * "sqlite-x3" is three independent SQLite servers sharing nothing: not a fleet (work enqueued on one never reaches
 * the others), only the ingest-fleet scenario's control for what three server processes on the same cores cost
 * each other, so the scenarios that dispatch refuse it.
 */
const STORES = {
  memory: { replicas: 1, shared: true, flags: () => ["--store", "memory"] },
  sqlite: { replicas: 1, shared: true, flags: (folder: string) => ["--store", `sqlite:${join(folder, "bench.db")}`] },
  "sqlite-full": {
    replicas: 1,
    shared: true,
    flags: (folder: string) => ["--store", `sqlite:${join(folder, "bench.db")}`, "--sqlite-synchronous", "full"],
  },
  postgres: { replicas: 1, shared: true, flags: (_folder: string, database?: string) => ["--store", needDatabase(database)] },
  "postgres-3": { replicas: 3, shared: true, flags: (_folder: string, database?: string) => ["--store", needDatabase(database)] },
  "sqlite-x3": { replicas: 3, shared: false, flags: (folder: string) => ["--store", `sqlite:${join(folder, "bench.db")}`] },
} satisfies Record<string, { replicas: number; shared: boolean; flags: (folder: string, database?: string) => string[] }>;

function needDatabase(database: string | undefined): string {
  if (database === undefined) throw new Error("a PostgreSQL store needs a database (startServerSet creates one)");
  return database;
}

export type BenchStore = keyof typeof STORES;
/** The stores a dispatching scenario may name: every server of a set shares the store. */
export const BENCH_STORES = (Object.keys(STORES) as BenchStore[]).filter((store) => STORES[store].shared);

/** Whether the store lives in PostgreSQL (a fresh database per server set, and the database's CPU reported). */
export const isPostgresStore = (store: BenchStore | undefined) => store === "postgres" || store === "postgres-3";

/** How many server processes a set of this store runs. */
export const replicasOf = (store: BenchStore | undefined) => STORES[store ?? "memory"].replicas;

/** A comma-separated list of store names from the command line; throws on an unknown one before anything runs. */
export function benchStores(list: string): BenchStore[] {
  const names = list.split(",").filter((name) => name !== "");
  const unknown = names.filter((name) => !(BENCH_STORES as string[]).includes(name));
  if (unknown.length > 0) throw new Error(`unknown store ${unknown.join(", ")}; the bench knows ${BENCH_STORES.join(", ")}`);
  return names as BenchStore[];
}

export interface ServerOptions {
  kind: ServerKind;
  /** Runnerline only; default memory. */
  store?: BenchStore;
  heartbeatIntervalS?: number;
  heartbeatGraceS?: number;
  /** Write a V8 CPU profile of the server into this folder when it exits. */
  cpuProfDir?: string;
  /** More `serve` flags (Runnerline only). */
  serveArgs?: string[];
  /** A PostgreSQL store's database URL (startServerSet creates the database). */
  database?: string;
}

export interface ServerProcess {
  pid: number;
  address: string;
  /** CPU, memory and event-loop delay now; `gc` runs a full collection first. */
  sample(options?: { gc?: boolean }): Promise<ProbeSample>;
  stop(): Promise<void>;
  /** The last lines the server wrote on stderr, for error reports. */
  stderrTail(): string;
}

export async function startServerProcess(options: ServerOptions): Promise<ServerProcess> {
  const execArgv = ["--expose-gc", "--import", probeUrl];
  const built = await builtServers();
  if (options.cpuProfDir !== undefined) execArgv.push("--cpu-prof", "--cpu-prof-dir", options.cpuProfDir);
  let script: string;
  let args: string[];
  // Where a SQLite store keeps its file; removed when the server exits, before stop() resolves.
  const folder = mkdtempSync(join(tmpdir(), "rl-bench-"));
  if (options.kind === "echo") {
    script = built.echo;
    args = ["--grpc-addr", "127.0.0.1:0"];
  } else {
    script = built.runnerline;
    args = ["serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", ...STORES[options.store ?? "memory"].flags(folder, options.database)];
    if (options.heartbeatIntervalS !== undefined) args.push("--heartbeat-interval", String(options.heartbeatIntervalS));
    if (options.heartbeatGraceS !== undefined) args.push("--heartbeat-grace", String(options.heartbeatGraceS));
    // Closed-loop load beats far faster than any runner; measure the full path, not the coalescing gate.
    args.push("--heartbeat-rate-limit", "0");
    if (options.serveArgs !== undefined) args.push(...options.serveArgs);
    // `npm run bench -- --auth`: tokens on, as bench/main.ts set up.
    if (process.env.RUNNERLINE_BENCH_AUTH_FILE) args.push("--auth-file", process.env.RUNNERLINE_BENCH_AUTH_FILE);
  }
  // "sqlite" is the server's default setting, whatever the shell's environment says.
  const env = { ...process.env, RUNNERLINE_SQLITE_SYNCHRONOUS: "" };
  const child = fork(script, args, { cwd: repoRoot, execArgv, env, stdio: ["ignore", "pipe", "pipe", "ipc"] });
  child.once("exit", () => rmSync(folder, { recursive: true, force: true }));
  let stderr = "";
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (stderr = (stderr + chunk).slice(-4000)));
  const address = await new Promise<string>((resolve, reject) => {
    let buffered = "";
    const timer = setTimeout(() => reject(new Error(`server did not start in 30 s: ${stderr}`)), 30_000);
    const onData = (chunk: string) => {
      buffered = (buffered + chunk).slice(-8000);
      const match = /serving gRPC on ([^\s,]+):(\d+)/.exec(buffered);
      if (match) {
        clearTimeout(timer);
        resolve(`${match[1]}:${match[2]}`);
        buffered = "";
      }
    };
    // Keep draining: the server logs a line per session, and a full pipe would stall it.
    child.stdout!.setEncoding("utf8").on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}) before serving: ${stderr.trim()}`));
    });
  });
  let nextId = 1;
  const pending = new Map<number, (sample: ProbeSample) => void>();
  child.on("message", (message: ProbeSample) => {
    if (message?.probe === "sample") pending.get(message.id)?.(message);
    pending.delete(message.id);
  });
  return {
    pid: child.pid!,
    address,
    sample: (options = {}) =>
      new Promise((resolve, reject) => {
        const id = nextId++;
        const timer = setTimeout(() => reject(new Error("server probe did not answer in 30 s")), 30_000);
        pending.set(id, (sample) => {
          clearTimeout(timer);
          resolve(sample);
        });
        child.send({ probe: "sample", id, gc: options.gc === true });
      }),
    stop: () => stopChild(child, 10_000),
    stderrTail: () => stderr,
  };
}

/** Probe samples of every server of a set, taken together, and the database's CPU at the same moment. */
export interface SetSample {
  /** One per server process, in the order of ServerSet.servers. */
  servers: ProbeSample[];
  /** CPU seconds of the machine's `postgres` processes so far (postgresCpuSeconds); PostgreSQL stores only. */
  dbCpuS?: number;
}

/** The server processes that make up one measured Runnerline (one, or the replicas sharing a database). */
export interface ServerSet {
  store: BenchStore;
  servers: ServerProcess[];
  /** The servers' gRPC addresses, in order; runners spread over them. */
  addresses: string[];
  /** The first server's address: where the bench enqueues. */
  address: string;
  sample(options?: { gc?: boolean }): Promise<SetSample>;
  /** PostgreSQL stores: the name of the set's database (databaseBackendsCpu reads its backends). */
  databaseName?: string;
  /** Stops every server, then drops the set's database. */
  stop(): Promise<void>;
  stderrTail(): string;
}

export interface ServerSetOptions extends ServerOptions {
  /** Where PostgreSQL is (PostgreSQL stores): each set gets a fresh database created through this URL. */
  postgresUrl?: string;
}

/**
 * Starts the servers of `options.store`: one process, or for a PostgreSQL store a fresh database and its replicas
 * (the first one starts alone, so that it creates the schema; the others then start together). Throws Skipped
 * where the store needs PostgreSQL and none answers.
 */
export async function startServerSet(options: ServerSetOptions): Promise<ServerSet> {
  const store = options.store ?? "memory";
  const servers: ServerProcess[] = [];
  let drop: (() => Promise<void>) | undefined;
  let database: string | undefined;
  let databaseName: string | undefined;
  const stop = async () => {
    await Promise.all(servers.map((server) => server.stop()));
    await drop?.().catch((error: unknown) => console.error(`bench: could not drop its database: ${String(error)}`));
  };
  try {
    if (isPostgresStore(store)) {
      const base = options.postgresUrl ?? DEFAULT_POSTGRES_URL;
      await requirePostgres(base);
      const created = await createBenchDatabase(base);
      database = created.url;
      databaseName = created.name;
      drop = created.drop;
    }
    const replicas = replicasOf(store);
    servers.push(await startServerProcess({ ...options, store, ...(database !== undefined && { database }) }));
    const rest = await Promise.allSettled(
      Array.from({ length: replicas - 1 }, () => startServerProcess({ ...options, store, ...(database !== undefined && { database }) })),
    );
    for (const started of rest) if (started.status === "fulfilled") servers.push(started.value);
    const failed = rest.find((started) => started.status === "rejected");
    if (failed !== undefined) throw failed.reason;
  } catch (error) {
    await stop();
    throw error;
  }
  const postgres = isPostgresStore(store);
  return {
    store,
    servers,
    addresses: servers.map((server) => server.address),
    address: servers[0]!.address,
    ...(databaseName !== undefined && { databaseName }),
    sample: async (sampleOptions) => {
      const samples = await Promise.all(servers.map((server) => server.sample(sampleOptions)));
      const dbCpuS = postgres ? postgresCpuSeconds() : undefined;
      return { servers: samples, ...(dbCpuS !== undefined && { dbCpuS }) };
    },
    stop,
    stderrTail: () =>
      servers
        .map((server, i) => (servers.length > 1 ? `[replica ${i + 1}] ` : "") + server.stderrTail().trim())
        .filter((tail) => tail !== "" && !/^\[replica \d+\] $/.test(tail))
        .join("\n"),
  };
}

export function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

type Reply = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string };
export type WorkerEvent = { event: string; [key: string]: unknown };

/** A load-generator process (bench/load-worker.ts, or another script of the same shape) driven by numbered requests. */
export class LoadWorker {
  private readonly child: ChildProcess;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  onEvent: (event: WorkerEvent) => void = () => {};

  constructor(
    readonly index: number,
    script = "bench/load-worker.ts",
  ) {
    this.child = fork(script, [String(index)], {
      cwd: repoRoot,
      execArgv: ["--import", "tsx"],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    this.child.on("message", (message: Reply | WorkerEvent) => {
      if ("event" in message) {
        this.onEvent(message);
        return;
      }
      const waiter = this.pending.get(message.id);
      this.pending.delete(message.id);
      if (message.ok) waiter?.resolve(message.result);
      else waiter?.reject(new Error(`load worker ${index}: ${message.error}`));
    });
    this.child.on("exit", (code, signal) => {
      for (const waiter of this.pending.values()) waiter.reject(new Error(`load worker ${index} exited (${code ?? signal})`));
      this.pending.clear();
    });
  }

  call<T>(command: string, args: Record<string, unknown> = {}, timeoutMs = 120_000): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`load worker ${this.index}: ${command} took over ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value as T);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.child.send({ id, command, ...args });
    });
  }

  stop(): Promise<void> {
    return stopChild(this.child, 3_000);
  }
}
