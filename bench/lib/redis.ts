/**
 * A private redis-server for the peer scenario: started on a free port with
 * append-only persistence (`appendfsync everysec`, Redis's recommended
 * durable setting), in its own temporary folder, and stopped by its pid. The
 * machine's shared Redis (no persistence) is never used, so the comparison is
 * durable against durable.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stopChild } from "./processes.js";

export interface RedisProcess {
  pid: number;
  port: number;
  /** CPU seconds the server has used so far (user + system, from /proc). */
  cpuSeconds(): number;
  stop(): Promise<void>;
}

/** The redis-server binary and its version, or undefined when it is not installed. */
export function findRedisServer(): { path: string; version: string } | undefined {
  for (const path of ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]) {
    try {
      const version = /v=(\S+)/.exec(execFileSync(path, ["--version"], { encoding: "utf8" }))?.[1] ?? "unknown";
      return { path, version };
    } catch {
      // not here
    }
  }
  return undefined;
}

export async function startRedis(binary: string): Promise<RedisProcess> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "rl-bench-redis-"));
  const child: ChildProcess = spawn(
    binary,
    ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "yes", "--appendfsync", "everysec"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server did not start in 10 s: ${output.slice(-500)}`)), 10_000);
    const onData = (chunk: Buffer) => {
      output = (output + chunk.toString("utf8")).slice(-4000);
      if (output.includes("Ready to accept connections")) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited (${code}): ${output.slice(-500)}`));
    });
  });
  const ticksPerSecond = 100; // USER_HZ on Linux
  return {
    pid: child.pid!,
    port,
    cpuSeconds() {
      // /proc/PID/stat: fields 14 and 15 (utime, stime) after the parenthesised name.
      const fields = readFileSync(`/proc/${child.pid}/stat`, "utf8").split(") ")[1]!.split(" ");
      return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
    },
    async stop() {
      await stopChild(child, 5_000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address !== null ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}
