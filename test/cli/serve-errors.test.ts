import { spawn } from "node:child_process";
import { once } from "node:events";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../polling.js";

/**
 * `runnerline serve` that cannot start says why in one line on stderr, names
 * what to change, and exits non-zero: nothing else on stderr (grpc-js's own
 * "E No address added…" line included), no "serving" line.
 */
const root = new URL("../..", import.meta.url).pathname;

async function serve(args: string[]) {
  const child = spawn(process.execPath, ["--import", "tsx", `${root}src/cli/main.ts`, "serve", "--store", "memory", ...args], {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUNNERLINE_GRPC_ADDR: "", RUNNERLINE_HTTP_ADDR: "", RUNNERLINE_STORE: "" },
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
    // Started after all: stop it, so that the assertion below reports it rather than the test hanging.
    if (stdout.includes("serving")) child.kill("SIGKILL");
  });
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  const [code] = (await once(child, "exit")) as [number | null];
  return { code, stdout, stderr };
}

let holder: net.Server;
let busy: number;

beforeAll(async () => {
  holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
  busy = (holder.address() as net.AddressInfo).port;
});

afterAll(() => new Promise<void>((resolve) => holder.close(() => resolve())));

describe("a busy port", () => {
  it("gRPC: one line naming the address and --grpc-addr / RUNNERLINE_GRPC_ADDR, exit 1", async () => {
    const { code, stdout, stderr } = await serve(["--grpc-addr", `127.0.0.1:${busy}`, "--http-addr", `127.0.0.1:${await freePort()}`]);
    expect(stderr).toBe(
      `runnerline: cannot listen for gRPC on 127.0.0.1:${busy}: address already in use (another process, perhaps another server, listens there); ` +
        "choose another address with --grpc-addr HOST:PORT (or RUNNERLINE_GRPC_ADDR)\n",
    );
    expect(code).toBe(1);
    expect(stdout).not.toMatch(/serving/);
  }, 30_000);

  it("HTTP: one line naming the address and --http-addr / RUNNERLINE_HTTP_ADDR, exit 1", async () => {
    const { code, stdout, stderr } = await serve(["--grpc-addr", `127.0.0.1:${await freePort()}`, "--http-addr", `127.0.0.1:${busy}`]);
    expect(stderr).toBe(
      `runnerline: cannot listen for HTTP on 127.0.0.1:${busy}: address already in use (another process, perhaps another server, listens there); ` +
        "choose another address with --http-addr HOST:PORT (or RUNNERLINE_HTTP_ADDR)\n",
    );
    expect(code).toBe(1);
    expect(stdout).not.toMatch(/serving/);
  }, 30_000);
});
