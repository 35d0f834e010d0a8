import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { collectSystemSnapshot, parseNvidiaSmiCsv } from "../../src/client/system-snapshot.js";

describe("collectSystemSnapshot on this host", () => {
  it("fills every source with plausible values", async () => {
    const before = Date.now();
    const snapshot = await collectSystemSnapshot();

    expect(snapshot.collectionErrors).toEqual([]);
    expect(snapshot.hostname).toBe(os.hostname());
    expect(snapshot.os).toMatch(new RegExp(`^${os.platform()} `));
    expect(timestampDate(snapshot.collectTime!).getTime()).toBeGreaterThanOrEqual(before - 1000);

    const cpu = snapshot.cpu!;
    expect(cpu.logicalCores).toBe(os.cpus().length);
    expect(cpu.physicalCores).toBeGreaterThanOrEqual(1);
    expect(cpu.physicalCores).toBeLessThanOrEqual(cpu.logicalCores);
    expect(cpu.usagePercent).toBeGreaterThanOrEqual(0);
    expect(cpu.usagePercent).toBeLessThanOrEqual(100);
    expect(cpu.loadAverage).toHaveLength(3);
    expect(cpu.model).not.toBe("");

    const memory = snapshot.memory!;
    expect(memory.totalBytes).toBe(BigInt(os.totalmem()));
    expect(memory.usedBytes).toBeGreaterThan(0n);
    expect(memory.usedBytes).toBeLessThanOrEqual(memory.totalBytes);
    expect(memory.availableBytes).toBeLessThanOrEqual(memory.totalBytes);
    expect(memory.swapUsedBytes).toBeLessThanOrEqual(memory.swapTotalBytes);

    expect(snapshot.disks.length).toBeGreaterThan(0);
    for (const disk of snapshot.disks) {
      expect(disk.mount).toMatch(/^\//);
      expect(disk.totalBytes).toBeGreaterThan(0n);
      expect(disk.usedBytes).toBeLessThanOrEqual(disk.totalBytes);
    }

    expect(snapshot.network!.rxBytesPerSecond).toBeGreaterThanOrEqual(0);
    expect(snapshot.network!.txBytesPerSecond).toBeGreaterThanOrEqual(0);
  });

  it("reports no GPUs and no error on a host without nvidia-smi", async () => {
    const snapshot = await withPath(await fakeBinDir(), () => collectSystemSnapshot());
    expect(snapshot.gpus).toEqual([]);
    expect(snapshot.collectionErrors).toEqual([]);
  });

  it("is cheap on repeated calls (static facts are cached)", async () => {
    await collectSystemSnapshot();
    const started = performance.now();
    await collectSystemSnapshot();
    // A heartbeat every 5 s must not spend seconds collecting.
    expect(performance.now() - started).toBeLessThan(1500);
  });
});

describe("collectSystemSnapshot failure handling", () => {
  it("reports a failing source and still fills the others", async () => {
    const snapshot = await collectSystemSnapshot({
      sources: {
        gpus: async () => {
          throw new Error("NVML: driver/library version mismatch");
        },
      },
    });
    expect(snapshot.gpus).toEqual([]);
    expect(snapshot.collectionErrors.map(({ source, message }) => ({ source, message }))).toEqual([
      { source: "gpus", message: "NVML: driver/library version mismatch" },
    ]);
    expect(snapshot.cpu?.logicalCores).toBeGreaterThan(0);
    expect(snapshot.memory?.totalBytes).toBeGreaterThan(0n);
  });

  it("gives up on a hung source at the timeout", async () => {
    const started = performance.now();
    const snapshot = await collectSystemSnapshot({
      sourceTimeoutMs: 100,
      sources: { disks: () => new Promise(() => {}), network: () => new Promise(() => {}) },
    });
    expect(performance.now() - started).toBeLessThan(1500);
    expect(snapshot.disks).toEqual([]);
    expect(snapshot.network).toBeUndefined();
    expect(snapshot.collectionErrors.map((error) => error.source).sort()).toEqual(["disks", "network"]);
    expect(snapshot.collectionErrors[0]?.message).toMatch(/timed out after 100 ms/);
  });

  it("reports every source when all fail, never rejecting", async () => {
    const boom = async () => {
      throw new Error("denied");
    };
    const snapshot = await collectSystemSnapshot({
      sources: { os: boom, cpu: boom, memory: boom, disks: boom, network: boom, gpus: boom },
    });
    expect(snapshot.collectionErrors.map((error) => error.source).sort()).toEqual(
      ["cpu", "disks", "gpus", "memory", "network", "os"],
    );
    expect(snapshot.collectTime).toBeDefined();
  });
});

describe("GPUs through nvidia-smi", () => {
  let binDir: string;
  beforeEach(async () => {
    binDir = await fakeBinDir();
  });
  afterEach(async () => {
    await rm(binDir, { recursive: true, force: true });
  });

  it("reads every GPU that nvidia-smi lists", async () => {
    await fakeNvidiaSmi(
      binDir,
      `cat <<'CSV'
0, NVIDIA H100 80GB HBM3, 87, 40960, 81559, 64, 512.33
1, NVIDIA H100 80GB HBM3, [N/A], 0, 81559, 31, [Not Supported]
CSV`,
    );
    const snapshot = await withPath(binDir, () => collectSystemSnapshot());
    expect(snapshot.collectionErrors).toEqual([]);
    expect(snapshot.gpus).toHaveLength(2);
    expect(snapshot.gpus[0]).toMatchObject({
      index: 0,
      name: "NVIDIA H100 80GB HBM3",
      utilizationPercent: 87,
      memoryUsedBytes: 40960n * 1024n * 1024n,
      memoryTotalBytes: 81559n * 1024n * 1024n,
      temperatureCelsius: 64,
      powerWatts: 512.33,
    });
    expect(snapshot.gpus[1]).toMatchObject({ index: 1, utilizationPercent: 0, powerWatts: 0 });
  });

  it("reports an nvidia-smi that exists but fails", async () => {
    await fakeNvidiaSmi(binDir, `echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." >&2; exit 9`);
    const snapshot = await withPath(binDir, () => collectSystemSnapshot());
    expect(snapshot.gpus).toEqual([]);
    expect(snapshot.collectionErrors).toHaveLength(1);
    expect(snapshot.collectionErrors[0]).toMatchObject({ source: "gpus" });
    expect(snapshot.collectionErrors[0]?.message).toMatch(/exit 9.*couldn't communicate/);
  });

  it("does not let a hung nvidia-smi stall the snapshot", async () => {
    await fakeNvidiaSmi(binDir, "exec sleep 30");
    const started = performance.now();
    const snapshot = await withPath(binDir, () => collectSystemSnapshot({ sourceTimeoutMs: 300 }));
    expect(performance.now() - started).toBeLessThan(1500);
    // On a loaded machine another source may miss the 300 ms too; the point is that the hung one is reported, not waited for.
    expect(snapshot.collectionErrors.map((error) => error.source)).toContain("gpus");
  });

  it("parses a line captured from a real H200 host", () => {
    expect(parseNvidiaSmiCsv("0, NVIDIA H200, 0, 0, 143771, 44, 97.54\n")).toEqual([
      expect.objectContaining({
        index: 0,
        name: "NVIDIA H200",
        utilizationPercent: 0,
        memoryUsedBytes: 0n,
        memoryTotalBytes: 143771n * 1024n * 1024n,
        temperatureCelsius: 44,
        powerWatts: 97.54,
      }),
    ]);
  });

  it("parses names that contain commas", () => {
    const [gpu] = parseNvidiaSmiCsv("3, Tesla V100, PCIe, 16GB, 5, 100, 16384, 40, 30.5\n");
    expect(gpu).toMatchObject({ index: 3, name: "Tesla V100, PCIe, 16GB", utilizationPercent: 5, powerWatts: 30.5 });
  });
});

async function fakeBinDir(): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), "runnerline-bin-"));
}

async function fakeNvidiaSmi(binDir: string, script: string): Promise<void> {
  const file = path.join(binDir, "nvidia-smi");
  await writeFile(file, `#!/bin/sh\n${script}\n`);
  await chmod(file, 0o755);
}

/** Runs with PATH holding only the fake bin dir plus the system dirs sh and sleep live in. */
async function withPath<T>(binDir: string, work: () => Promise<T>): Promise<T> {
  const saved = process.env.PATH;
  process.env.PATH = `${binDir}:/usr/bin:/bin`;
  try {
    return await work();
  } finally {
    process.env.PATH = saved;
  }
}
