import { create, toBinary } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { type SystemSnapshot, SystemSnapshotSchema, TelemetrySampleSchema } from "../../src/gen/runnerline/v1/telemetry_pb.js";
import { MAX_HISTORY_GPUS, WorkerHistory } from "../../src/server/telemetry/worker-history.js";
import { T0 } from "../fixtures.js";

function snapshot(cpu: number, gpus = 0): SystemSnapshot {
  return create(SystemSnapshotSchema, {
    cpu: { usagePercent: cpu },
    memory: { usedBytes: BigInt(cpu) * 1024n ** 3n, totalBytes: 64n * 1024n ** 3n },
    gpus: Array.from({ length: gpus }, (_, index) => ({
      index,
      utilizationPercent: cpu + index,
      memoryUsedBytes: 1000n + BigInt(index),
      memoryTotalBytes: 80n * 1024n ** 3n,
    })),
  });
}

const ROW_BYTES = (gpus: number) => (4 + 4 * gpus) * 8;

describe("WorkerHistory", () => {
  it("keeps every field of the samples, oldest first", () => {
    const history = new WorkerHistory({ samplesPerWorker: 5, maxBytes: 1 << 20 });
    history.record("w", snapshot(10, 2), T0);
    history.record("w", snapshot(20, 2), T0 + 1000);
    const samples = history.samples("w");
    expect(samples.map((s) => timestampMs(s.receiveTime!))).toEqual([T0, T0 + 1000]);
    expect(samples[1]).toMatchObject({ cpuUsagePercent: 20, memoryUsedBytes: 20n * 1024n ** 3n, memoryTotalBytes: 64n * 1024n ** 3n });
    expect(samples[1]!.gpus.map((g) => [g.index, g.utilizationPercent, g.memoryUsedBytes, g.memoryTotalBytes])).toEqual([
      [0, 20, 1000n, 80n * 1024n ** 3n],
      [1, 21, 1001n, 80n * 1024n ** 3n],
    ]);
  });

  it("answers byte counts at the top of the uint64 range with samples protobuf can encode (fuzz finding)", () => {
    const history = new WorkerHistory({ samplesPerWorker: 5, maxBytes: 1 << 20 });
    const max = 2n ** 64n - 1n;
    history.record("w", create(SystemSnapshotSchema, { memory: { usedBytes: max, totalBytes: max }, gpus: [{ memoryUsedBytes: max, memoryTotalBytes: max }] }), T0);
    const [sample] = history.samples("w");
    expect(() => toBinary(TelemetrySampleSchema, sample!)).not.toThrow();
    expect(sample!.memoryUsedBytes).toBe(max);
    expect(sample!.gpus[0]!.memoryTotalBytes).toBe(max);
  });

  it("overwrites the oldest samples once full", () => {
    const history = new WorkerHistory({ samplesPerWorker: 3, maxBytes: 1 << 20 });
    for (let i = 1; i <= 7; i++) history.record("w", snapshot(i), T0 + i);
    expect(history.samples("w").map((s) => s.cpuUsagePercent)).toEqual([5, 6, 7]);
  });

  it("records nothing for a heartbeat without a snapshot, and nothing for unknown workers", () => {
    const history = new WorkerHistory({ samplesPerWorker: 3, maxBytes: 1 << 20 });
    history.record("w", undefined, T0);
    expect(history.samples("w")).toEqual([]);
    expect(history.byteSize).toBe(0);
  });

  it("starts afresh when a host's GPU count changes", () => {
    const history = new WorkerHistory({ samplesPerWorker: 3, maxBytes: 1 << 20 });
    history.record("w", snapshot(1, 1), T0);
    history.record("w", snapshot(2, 2), T0 + 1);
    expect(history.samples("w").map((s) => [s.cpuUsagePercent, s.gpus.length])).toEqual([[2, 2]]);
    expect(history.byteSize).toBe(3 * ROW_BYTES(2));
  });

  it("keeps at most MAX_HISTORY_GPUS GPUs per sample", () => {
    const history = new WorkerHistory({ samplesPerWorker: 2, maxBytes: 1 << 20 });
    history.record("w", snapshot(1, MAX_HISTORY_GPUS + 3), T0);
    expect(history.samples("w")[0]!.gpus).toHaveLength(MAX_HISTORY_GPUS);
  });

  it("stays within its byte budget: idle workers make room, live ones are kept", () => {
    const perWorker = 4 * ROW_BYTES(0);
    const history = new WorkerHistory({ samplesPerWorker: 4, maxBytes: 3 * perWorker, evictIdleAfterMs: 1_000 });
    history.record("a", snapshot(1), T0);
    history.record("b", snapshot(1), T0);
    history.record("c", snapshot(1), T0 + 500);
    history.record("a", snapshot(2), T0 + 900); // a is now the most recent
    history.record("d", snapshot(1), T0 + 999); // full, and nobody idle for 1 s: d keeps no history
    expect(history.samples("d")).toEqual([]);
    history.record("d", snapshot(2), T0 + 1_001); // b is idle now: it makes room
    expect(history.byteSize).toBe(3 * perWorker);
    expect(history.samples("b")).toEqual([]);
    expect(history.samples("a").map((s) => s.cpuUsagePercent)).toEqual([1, 2]);
    expect(history.samples("c")).toHaveLength(1);
    expect(history.samples("d").map((s) => s.cpuUsagePercent)).toEqual([2]);
  });

  it("keeps no history when one worker's samples alone exceed the budget", () => {
    const history = new WorkerHistory({ samplesPerWorker: 100, maxBytes: 100 });
    history.record("w", snapshot(1), T0);
    expect(history.samples("w")).toEqual([]);
    expect(history.byteSize).toBe(0);
  });

  it("forgets a worker on request", () => {
    const history = new WorkerHistory({ samplesPerWorker: 2, maxBytes: 1 << 20 });
    history.record("w", snapshot(1), T0);
    history.forget("w");
    expect(history.samples("w")).toEqual([]);
    expect(history.byteSize).toBe(0);
  });

  it("refuses a non-positive sample count", () => {
    expect(() => new WorkerHistory({ samplesPerWorker: 0, maxBytes: 1 })).toThrow(/positive integer/);
  });
});
