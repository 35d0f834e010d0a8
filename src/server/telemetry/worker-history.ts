import { create } from "@bufbuild/protobuf";
import {
  GpuSampleSchema,
  type SystemSnapshot,
  type TelemetrySample,
  TelemetrySampleSchema,
} from "../../gen/runnerline/v1/telemetry_pb.js";
import { type Millis, toTimestamp } from "../domain/time.js";

export interface WorkerHistoryOptions {
  /** Samples kept per worker; older ones are overwritten. */
  samplesPerWorker: number;
  /** Ceiling on the memory all workers' samples take together. */
  maxBytes: number;
  /**
   * When the budget is full, a worker silent for this long gives its memory
   * to a newcomer; if none is, the newcomer keeps no history (default 5 min).
   */
  evictIdleAfterMs?: number;
}

export const DEFAULT_HISTORY_SAMPLES = 120;
export const DEFAULT_HISTORY_MAX_BYTES = 128 * 1024 * 1024;

/** More GPUs than this on one host are left out of its history (not of its snapshot). */
export const MAX_HISTORY_GPUS = 16;

const DEFAULT_EVICT_IDLE_AFTER_MS = 5 * 60_000;

// One sample is a row of numbers in a preallocated Float64Array, so recording
// a heartbeat allocates nothing: [receive time, cpu %, memory used, memory
// total] then [index, utilisation %, memory used, memory total] per GPU.
const HOST_FIELDS = 4;
const GPU_FIELDS = 4;

/** A worker's samples: a ring of `capacity` rows of `width` numbers. */
interface Ring {
  readonly rows: Float64Array;
  readonly width: number;
  readonly gpuCount: number;
  /** Index of the oldest row. */
  start: number;
  length: number;
  /** When the newest row was recorded. */
  lastMs: number;
}

/**
 * The last few telemetry samples of every worker, in memory only, for the
 * sparklines of live views. Recording is a handful of array writes; the
 * total is bounded by `maxBytes`. When it is full, workers silent for a
 * while make room for new ones; live workers are never evicted, because in a
 * fleet larger than the budget that would churn every worker's history away
 * (and allocate on every heartbeat) instead of keeping most of them.
 */
export class WorkerHistory {
  /** Insertion order is recency: each record moves its worker to the end. */
  private readonly rings = new Map<string, Ring>();
  private bytes = 0;

  constructor(private readonly options: WorkerHistoryOptions) {
    if (!Number.isInteger(options.samplesPerWorker) || options.samplesPerWorker < 1) {
      throw new Error("history samples per worker must be a positive integer");
    }
  }

  /** Adds one heartbeat's numbers; a heartbeat without a snapshot adds nothing. */
  record(workerId: string, snapshot: SystemSnapshot | undefined, now: Millis): void {
    if (snapshot === undefined) return;
    const gpus = snapshot.gpus.length > MAX_HISTORY_GPUS ? snapshot.gpus.slice(0, MAX_HISTORY_GPUS) : snapshot.gpus;
    let ring = this.rings.get(workerId);
    if (ring !== undefined) {
      this.rings.delete(workerId);
      // A host whose GPU count changed starts a fresh history: its old rows have another shape.
      if (ring.gpuCount !== gpus.length) {
        this.bytes -= ring.rows.byteLength;
        ring = undefined;
      }
    }
    ring ??= this.allocate(gpus.length, now);
    if (ring === undefined) return;
    this.rings.set(workerId, ring);
    ring.lastMs = now;

    const capacity = this.options.samplesPerWorker;
    const slot = (ring.start + ring.length) % capacity;
    if (ring.length < capacity) ring.length += 1;
    else ring.start = (ring.start + 1) % capacity;
    const rows = ring.rows;
    let at = slot * ring.width;
    rows[at++] = now;
    rows[at++] = snapshot.cpu?.usagePercent ?? 0;
    rows[at++] = Number(snapshot.memory?.usedBytes ?? 0n);
    rows[at++] = Number(snapshot.memory?.totalBytes ?? 0n);
    for (const gpu of gpus) {
      rows[at++] = gpu.index;
      rows[at++] = gpu.utilizationPercent;
      rows[at++] = Number(gpu.memoryUsedBytes);
      rows[at++] = Number(gpu.memoryTotalBytes);
    }
  }

  /** The worker's samples, oldest first (empty when none were recorded). */
  samples(workerId: string): TelemetrySample[] {
    const ring = this.rings.get(workerId);
    if (ring === undefined) return [];
    const capacity = this.options.samplesPerWorker;
    const out: TelemetrySample[] = [];
    for (let i = 0; i < ring.length; i++) {
      let at = ((ring.start + i) % capacity) * ring.width;
      const rows = ring.rows;
      const sample = create(TelemetrySampleSchema, {
        receiveTime: toTimestamp(rows[at++]!),
        cpuUsagePercent: rows[at++]!,
        memoryUsedBytes: uint64Of(rows[at++]!),
        memoryTotalBytes: uint64Of(rows[at++]!),
      });
      for (let g = 0; g < ring.gpuCount; g++) {
        sample.gpus.push(
          create(GpuSampleSchema, {
            index: rows[at++]!,
            utilizationPercent: rows[at++]!,
            memoryUsedBytes: uint64Of(rows[at++]!),
            memoryTotalBytes: uint64Of(rows[at++]!),
          }),
        );
      }
      out.push(sample);
    }
    return out;
  }

  /** Drops a worker's samples, e.g. when the worker is deleted. */
  forget(workerId: string): void {
    const ring = this.rings.get(workerId);
    if (ring === undefined) return;
    this.rings.delete(workerId);
    this.bytes -= ring.rows.byteLength;
  }

  /** Memory the samples take now, in bytes. */
  get byteSize(): number {
    return this.bytes;
  }

  /** A new empty ring, evicting idle workers to fit; undefined when it does not fit. */
  private allocate(gpuCount: number, now: Millis): Ring | undefined {
    const width = HOST_FIELDS + GPU_FIELDS * gpuCount;
    const byteLength = width * this.options.samplesPerWorker * Float64Array.BYTES_PER_ELEMENT;
    const idleBefore = now - (this.options.evictIdleAfterMs ?? DEFAULT_EVICT_IDLE_AFTER_MS);
    // Map order is recency: the first entry not idle means no later one is.
    for (const [oldest, ring] of this.rings) {
      if (this.bytes + byteLength <= this.options.maxBytes || ring.lastMs > idleBefore) break;
      this.forget(oldest);
    }
    if (this.bytes + byteLength > this.options.maxBytes) return undefined;
    this.bytes += byteLength;
    return { rows: new Float64Array(width * this.options.samplesPerWorker), width, gpuCount, start: 0, length: 0, lastMs: now };
  }
}

const UINT64_MAX = 2n ** 64n - 1n;

/**
 * A byte count kept as a double, back as a uint64. Near the top of the range
 * the double rounds up to 2^64, which protobuf cannot encode (the fuzz suite
 * sent 2^64 - 1 and GetWorkerHistory answered INTERNAL), so it is clamped.
 */
function uint64Of(value: number): bigint {
  if (!(value > 0)) return 0n;
  const whole = BigInt(Math.floor(value));
  return whole > UINT64_MAX ? UINT64_MAX : whole;
}
