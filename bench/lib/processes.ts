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
import type { ProbeSample } from "./server-probe.js";

export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const probeUrl = pathToFileURL(fileURLToPath(new URL("./server-probe.ts", import.meta.url))).href;

export type ServerKind = "runnerline" | "echo";

/**
 * The stores the bench compares, by the names its rows carry, and the `serve` flags of each; a SQLite store gets a
 * fresh file in a folder of its own. "sqlite" is the server's default (synchronous=NORMAL), "sqlite-full" the
 * stronger setting (docs/storage.md says what each guarantees).
 */
const STORE_FLAGS = {
  memory: () => ["--store", "memory"],
  sqlite: (folder: string) => ["--store", `sqlite:${join(folder, "bench.db")}`],
  "sqlite-full": (folder: string) => ["--store", `sqlite:${join(folder, "bench.db")}`, "--sqlite-synchronous", "full"],
} satisfies Record<string, (folder: string) => string[]>;

export type BenchStore = keyof typeof STORE_FLAGS;
export const BENCH_STORES = Object.keys(STORE_FLAGS) as BenchStore[];

/** A comma-separated list of store names from the command line; throws on an unknown one before anything runs. */
export function benchStores(list: string): BenchStore[] {
  const names = list.split(",");
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
  const execArgv = ["--expose-gc", "--import", "tsx", "--import", probeUrl];
  if (options.cpuProfDir !== undefined) execArgv.push("--cpu-prof", "--cpu-prof-dir", options.cpuProfDir);
  let script: string;
  let args: string[];
  // Where a SQLite store keeps its file; removed when the server exits, before stop() resolves.
  const folder = mkdtempSync(join(tmpdir(), "rl-bench-"));
  if (options.kind === "echo") {
    script = "bench/echo-server.ts";
    args = ["--grpc-addr", "127.0.0.1:0"];
  } else {
    script = "src/cli/main.ts";
    args = ["serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", ...STORE_FLAGS[options.store ?? "memory"](folder)];
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
