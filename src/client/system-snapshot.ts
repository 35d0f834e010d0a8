import { execFile } from "node:child_process";
import os from "node:os";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import si from "systeminformation";
import {
  CollectionErrorSchema,
  CpuStatsSchema,
  DiskStatsSchema,
  GpuStatsSchema,
  MemoryStatsSchema,
  NetworkStatsSchema,
  SystemSnapshotSchema,
} from "../gen/runnerline/v1/telemetry_pb.js";
import type {
  CpuStats,
  DiskStats,
  GpuStats,
  MemoryStats,
  NetworkStats,
  SystemSnapshot,
} from "../gen/runnerline/v1/telemetry_pb.js";

/** Host name and operating system, e.g. { hostname: "gpu-07", os: "linux 6.1.0 (Debian GNU/Linux 12)" }. */
export interface HostIdentity {
  hostname: string;
  os: string;
}

/**
 * One reader per telemetry source. Each runs independently: a reader that
 * throws or exceeds the timeout leaves its part of the snapshot empty and adds
 * a CollectionError named after the source.
 */
export interface SnapshotSources {
  os: () => Promise<HostIdentity>;
  cpu: () => Promise<CpuStats>;
  memory: () => Promise<MemoryStats>;
  disks: () => Promise<DiskStats[]>;
  network: () => Promise<NetworkStats>;
  gpus: () => Promise<GpuStats[]>;
}

export interface CollectSystemSnapshotOptions {
  /** Replaces individual readers (tests, or hosts with their own telemetry). */
  sources?: Partial<SnapshotSources>;
  /** Per-source limit; a source that takes longer is reported, not awaited. Default 2000 ms. */
  sourceTimeoutMs?: number;
  /** Clock for collect_time. */
  now?: () => Date;
}

const defaultSourceTimeoutMs = 2_000;

/**
 * Collects a SystemSnapshot of this host. Never rejects: every failing source
 * is listed in `collection_errors` instead. Cheap enough for a 5 s heartbeat —
 * static facts are read once, and a source still running from an earlier call
 * is joined instead of started again.
 */
export async function collectSystemSnapshot(options: CollectSystemSnapshotOptions = {}): Promise<SystemSnapshot> {
  const sources: SnapshotSources = { ...defaultSources, ...options.sources };
  const timeoutMs = options.sourceTimeoutMs ?? defaultSourceTimeoutMs;
  const now = options.now ?? (() => new Date());

  const [host, cpu, memory, disks, network, gpus] = await Promise.allSettled([
    withTimeout(sources.os(), timeoutMs),
    withTimeout(sources.cpu(), timeoutMs),
    withTimeout(sources.memory(), timeoutMs),
    withTimeout(sources.disks(), timeoutMs),
    withTimeout(sources.network(), timeoutMs),
    withTimeout(sources.gpus(), timeoutMs),
  ]);

  const snapshot = create(SystemSnapshotSchema);
  const fail = (source: keyof SnapshotSources, result: PromiseRejectedResult) => {
    snapshot.collectionErrors.push(
      create(CollectionErrorSchema, { source, message: describeError(result.reason) }),
    );
  };

  if (host.status === "fulfilled") {
    snapshot.hostname = host.value.hostname;
    snapshot.os = host.value.os;
  } else {
    fail("os", host);
  }
  if (cpu.status === "fulfilled") snapshot.cpu = cpu.value;
  else fail("cpu", cpu);
  if (memory.status === "fulfilled") snapshot.memory = memory.value;
  else fail("memory", memory);
  if (disks.status === "fulfilled") snapshot.disks = disks.value;
  else fail("disks", disks);
  if (network.status === "fulfilled") snapshot.network = network.value;
  else fail("network", network);
  if (gpus.status === "fulfilled") snapshot.gpus = gpus.value;
  else fail("gpus", gpus);

  snapshot.collectTime = timestampFromDate(now());
  return snapshot;
}

class SourceTimeoutError extends Error {
  constructor(timeoutMs: number) {
    super(`timed out after ${timeoutMs} ms`);
    this.name = "SourceTimeoutError";
  }
}

function withTimeout<T>(work: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new SourceTimeoutError(timeoutMs)), timeoutMs);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

function describeError(reason: unknown): string {
  if (reason instanceof Error) return reason.message || reason.name;
  return String(reason);
}

/**
 * Joins a call still in flight instead of starting another, so a source that
 * hangs past its timeout costs one stuck call, not one per heartbeat.
 */
function singleFlight<T>(read: () => Promise<T>): () => Promise<T> {
  let inFlight: Promise<T> | undefined;
  return () => {
    inFlight ??= read().finally(() => {
      inFlight = undefined;
    });
    return inFlight;
  };
}

/** Reads a fact once; a failed read is retried on the next call rather than cached. */
function once<T>(read: () => Promise<T>): () => Promise<T> {
  let cached: Promise<T> | undefined;
  return () => {
    cached ??= read().catch((error: unknown) => {
      cached = undefined;
      throw error;
    });
    return cached;
  };
}

const readHostIdentity = once(async (): Promise<HostIdentity> => {
  const info = await si.osInfo();
  const distro = info.distro ? ` (${[info.distro, info.release].filter(Boolean).join(" ")})` : "";
  return { hostname: info.hostname || os.hostname(), os: `${info.platform} ${info.kernel}${distro}` };
});

const readCpuTopology = once(async () => {
  const cpu = await si.cpu();
  return {
    model: [cpu.manufacturer, cpu.brand].filter(Boolean).join(" "),
    logicalCores: cpu.cores,
    physicalCores: cpu.physicalCores,
  };
});

async function readCpu(): Promise<CpuStats> {
  const [topology, load] = await Promise.all([readCpuTopology(), si.currentLoad()]);
  // os.loadavg() is [0, 0, 0] on Windows, which has no load average.
  const loadAverage = os.platform() === "win32" ? [] : os.loadavg();
  return create(CpuStatsSchema, { ...topology, usagePercent: finiteOrZero(load.currentLoad), loadAverage });
}

async function readMemory(): Promise<MemoryStats> {
  const mem = await si.mem();
  return create(MemoryStatsSchema, {
    totalBytes: toBytes(mem.total),
    // "active" is total minus available: what processes hold, without caches.
    usedBytes: toBytes(mem.active),
    availableBytes: toBytes(mem.available),
    swapTotalBytes: toBytes(mem.swaptotal),
    swapUsedBytes: toBytes(mem.swapused),
  });
}

// Kernel and in-memory file systems say nothing about a runner's disk space.
const virtualFileSystems = new Set(["tmpfs", "devtmpfs", "ramfs", "squashfs", "proc", "sysfs", "cgroup", "cgroup2", "devfs"]);

async function readDisks(): Promise<DiskStats[]> {
  const fileSystems = await si.fsSize();
  const seen = new Set<string>();
  const disks: DiskStats[] = [];
  for (const fs of fileSystems) {
    if (!fs.mount || fs.size <= 0 || virtualFileSystems.has(fs.type) || seen.has(fs.mount)) continue;
    seen.add(fs.mount);
    disks.push(create(DiskStatsSchema, { mount: fs.mount, totalBytes: toBytes(fs.size), usedBytes: toBytes(fs.used) }));
  }
  return disks;
}

async function readNetwork(): Promise<NetworkStats> {
  const interfaces = Object.entries(os.networkInterfaces())
    .filter(([, addresses]) => !addresses?.every((address) => address.internal))
    .map(([name]) => name);
  if (interfaces.length === 0) return create(NetworkStatsSchema);
  const stats = await si.networkStats(interfaces.join(","));
  let rx = 0;
  let tx = 0;
  // systeminformation reports rates relative to its previous call, so the
  // first call after start has no rates (null); that reads as 0, not an error.
  for (const iface of stats) {
    rx += finiteOrZero(iface.rx_sec);
    tx += finiteOrZero(iface.tx_sec);
  }
  return create(NetworkStatsSchema, { rxBytesPerSecond: rx, txBytesPerSecond: tx });
}

const nvidiaSmiQuery = "index,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw";
const mebibyte = 1024 * 1024;

/**
 * GPUs through nvidia-smi, run asynchronously with its own kill timeout.
 * systeminformation's graphics() also calls nvidia-smi, but synchronously
 * (execFileSync: a hung driver would freeze the event loop, heartbeats
 * included), it discards nvidia-smi's failures, and it runs lspci on every
 * call. No nvidia-smi on the PATH means no NVIDIA GPUs: an empty list, not an
 * error. An nvidia-smi that exists but fails is an error.
 */
async function readGpus(): Promise<GpuStats[]> {
  let stdout: string;
  try {
    stdout = await runNvidiaSmi(["--query-gpu=" + nvidiaSmiQuery, "--format=csv,noheader,nounits"]);
  } catch (error) {
    if (isMissingExecutable(error)) return [];
    throw error;
  }
  return parseNvidiaSmiCsv(stdout);
}

/** Parses `nvidia-smi --query-gpu=<nvidiaSmiQuery> --format=csv,noheader,nounits`. Exported for tests. */
export function parseNvidiaSmiCsv(stdout: string): GpuStats[] {
  const gpus: GpuStats[] = [];
  for (const line of stdout.split("\n")) {
    if (!line.trim()) continue;
    const fields = line.split(",").map((field) => field.trim());
    if (fields.length < 7) throw new Error(`unexpected nvidia-smi line: ${JSON.stringify(line)}`);
    // GPU names may contain commas; the six numeric fields around the name never do.
    const [index, ...rest] = fields;
    const numeric = rest.slice(-5);
    const name = rest.slice(0, rest.length - 5).join(", ");
    const [utilization, memoryUsed, memoryTotal, temperature, power] = numeric.map(parseNvidiaNumber);
    gpus.push(
      create(GpuStatsSchema, {
        index: parseGpuIndex(index) ?? gpus.length,
        name,
        utilizationPercent: utilization ?? 0,
        memoryUsedBytes: toBytes((memoryUsed ?? 0) * mebibyte),
        memoryTotalBytes: toBytes((memoryTotal ?? 0) * mebibyte),
        temperatureCelsius: temperature ?? 0,
        powerWatts: power ?? 0,
      }),
    );
  }
  return gpus;
}

function parseGpuIndex(field: string | undefined): number | undefined {
  const index = Number.parseInt(field ?? "", 10);
  return Number.isInteger(index) && index >= 0 ? index : undefined;
}

/** "[N/A]" and "[Not Supported]" are how nvidia-smi says a sensor is absent. */
function parseNvidiaNumber(field: string): number {
  const value = Number.parseFloat(field);
  return Number.isFinite(value) ? value : 0;
}

function runNvidiaSmi(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      "nvidia-smi",
      args,
      // Killed at the source timeout, so a hung driver call never outlives the snapshot that gave up on it.
      { timeout: defaultSourceTimeoutMs, killSignal: "SIGKILL", maxBuffer: 1024 * 1024, windowsHide: true },
      (error, stdout, stderr) => {
        if (!error) return resolve(stdout);
        const detail = stderr.trim() || stdout.trim();
        if (error.killed) return reject(new Error(`nvidia-smi killed after ${defaultSourceTimeoutMs} ms`));
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return reject(error);
        reject(new Error(`nvidia-smi failed (exit ${String(error.code)})${detail ? `: ${detail}` : ""}`));
      },
    );
  });
}

function isMissingExecutable(error: unknown): boolean {
  return error instanceof Error && (error as NodeJS.ErrnoException).code === "ENOENT";
}

function finiteOrZero(value: number | null | undefined): number {
  return typeof value === "number" && Number.isFinite(value) ? value : 0;
}

function toBytes(value: number): bigint {
  return Number.isFinite(value) && value > 0 ? BigInt(Math.round(value)) : 0n;
}

const defaultSources: SnapshotSources = {
  os: readHostIdentity,
  cpu: singleFlight(readCpu),
  memory: singleFlight(readMemory),
  disks: singleFlight(readDisks),
  network: singleFlight(readNetwork),
  gpus: singleFlight(readGpus),
};
