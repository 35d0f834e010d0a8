import { type ChildProcess, execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { staleReason } from "../../bin/build-state.mjs";

/**
 * The package as a project outside this repository gets it: `npm pack`, then a fresh temporary project installs the
 * tarball offline (npm ci from the npm cache, with a lock file made from this repository's, since a plain
 * `npm install --offline` needs registry metadata that `npm ci` never caches), then runs `runnerline serve` from
 * its node_modules/.bin, a runner and a training loop written there in plain JavaScript (consumer/*.mjs) that import
 * only `runnerline/client`, and type-checks a TypeScript file against the installed declarations. better-sqlite3's
 * compiled addon is copied from this repository's install rather than compiling SQLite again (minutes); everything
 * else comes from the tarball. dist/ is fresh: vitest's global setup rebuilt it if src/ changed.
 */
const root = new URL("../..", import.meta.url).pathname;
const run = promisify(execFile);
const scratch = mkdtempSync(join(tmpdir(), "runnerline-package-"));
const app = join(scratch, "app");
const children: ChildProcess[] = [];
let tarball: string;
let manifest: { dependencies: Record<string, string>; devDependencies: Record<string, string>; exports: Record<string, unknown> };

interface LockEntry {
  dev?: boolean;
  [field: string]: unknown;
}

/** package-lock.json for `app`: the tarball, and this repository's locked versions of everything it needs at run time. */
function consumerLock(tarballName: string) {
  const lock = JSON.parse(readFileSync(join(root, "package-lock.json"), "utf8")) as { packages: Record<string, LockEntry> };
  const self = lock.packages[""]!;
  const packages: Record<string, unknown> = {
    "": { name: "consumer", dependencies: { runnerline: `file:${tarballName}` } },
    "node_modules/runnerline": {
      version: self.version,
      resolved: `file:${tarballName}`,
      dependencies: self.dependencies,
      bin: self.bin,
      engines: self.engines,
    },
  };
  for (const [path, entry] of Object.entries(lock.packages)) {
    if (path.startsWith("node_modules/") && entry.dev !== true) packages[path] = entry;
  }
  return { name: "consumer", lockfileVersion: 3, requires: true, packages };
}

function start(command: string, args: string[]): { child: ChildProcess; output: () => string; exited: Promise<unknown[]> } {
  const child = spawn(command, args, { cwd: app, stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  return { child, output: () => output, exited: once(child, "exit") };
}

async function until(read: () => string, pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
  const started = Date.now();
  for (;;) {
    const match = pattern.exec(read());
    if (match !== null) return match;
    if (Date.now() - started > timeoutMs) throw new Error(`${pattern} did not appear within ${timeoutMs} ms:\n${read()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

beforeAll(async () => {
  // Never pack an outdated build (the global setup rebuilt it; this says so if it did not).
  expect(staleReason(root)).toBeUndefined();
  manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
  const { stdout } = await run("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", scratch], { cwd: root });
  const [packed] = JSON.parse(stdout) as { filename: string; files: { path: string }[] }[];
  tarball = packed!.filename;
  mkdirSync(app);
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module", dependencies: { runnerline: `file:../${tarball}` } }));
  writeFileSync(join(app, "package-lock.json"), JSON.stringify(consumerLock(`../${tarball}`), null, 2));
  await run("npm", ["ci", "--offline", "--ignore-scripts", "--no-audit", "--no-fund"], { cwd: app });
  const addon = join(dirname(createRequire(join(root, "package.json")).resolve("better-sqlite3/package.json")), "build/Release/better_sqlite3.node");
  mkdirSync(join(app, "node_modules/better-sqlite3/build/Release"), { recursive: true });
  copyFileSync(addon, join(app, "node_modules/better-sqlite3/build/Release/better_sqlite3.node"));
  cpSync(new URL("./consumer", import.meta.url).pathname, app, { recursive: true });
}, 180_000);

afterAll(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  rmSync(scratch, { recursive: true, force: true });
});

describe("the packed package", () => {
  it("holds compiled JavaScript with declarations, and needs no TypeScript loader", async () => {
    const installed = join(app, "node_modules/runnerline");
    expect(existsSync(join(installed, "src"))).toBe(false);
    expect(existsSync(join(installed, "dist/client/index.js"))).toBe(true);
    expect(existsSync(join(installed, "dist/client/index.d.ts"))).toBe(true);
    expect(existsSync(join(installed, "dist/cli/main.js"))).toBe(true);
    expect(existsSync(join(installed, "web/dist/index.html"))).toBe(true);
    expect(manifest.dependencies).not.toHaveProperty("tsx");
    expect(manifest.dependencies).not.toHaveProperty("typescript");
    expect(existsSync(join(app, "node_modules/tsx"))).toBe(false);
    expect(manifest.exports["./client"]).toEqual({ types: "./dist/client/index.d.ts", default: "./dist/client/index.js" });
    const { stdout } = await run(join(app, "node_modules/.bin/runnerline"), ["--version"], { cwd: app });
    expect(stdout.trim()).toBe((manifest as unknown as { version: string }).version);
  });

  it("runs the server from node_modules/.bin, and a runner and a training loop written in the project", async () => {
    const server = start(join(app, "node_modules/.bin/runnerline"), [
      "serve",
      "--store",
      `sqlite:${join(app, "runnerline.db")}`,
      "--grpc-addr",
      "127.0.0.1:0",
      "--http-addr",
      "127.0.0.1:0",
    ]);
    const [, port] = await until(server.output, /serving gRPC on 127\.0\.0\.1:(\d+)/, 30_000);
    const address = `127.0.0.1:${port}`;
    const runner = start(process.execPath, ["runner.mjs", address, "consumer-runner-1"]);
    const training = await run(process.execPath, ["train.mjs", address], { cwd: app, timeout: 90_000 });
    const report = JSON.parse(training.stdout) as {
      outcomes: { question: string; status: string; result: unknown; attempts: number }[];
      refusedBeforeSending: boolean;
      notFound: unknown;
      timeoutErrorExported: boolean;
    };
    const byQuestion = Object.fromEntries(report.outcomes.map((o) => [o.question, o]));
    expect(byQuestion["2+3"]).toEqual({ question: "2+3", status: "SUCCEEDED", result: { answer: 5, reward: 1 }, attempts: 1 });
    expect(byQuestion["1+1"]).toEqual({ question: "1+1", status: "SUCCEEDED", result: { answer: 2, reward: 0 }, attempts: 1 });
    expect(byQuestion["fail"]).toMatchObject({ status: "FAILED", attempts: 2 });
    expect(report).toMatchObject({ refusedBeforeSending: true, notFound: 5 /* Code.NotFound */, timeoutErrorExported: true });
    // The runner drains on SIGTERM, then the server does.
    runner.child.kill("SIGTERM");
    expect((await runner.exited)[0], runner.output()).toBe(0);
    expect(runner.output()).toContain("runner stopped");
    server.child.kill("SIGTERM");
    expect((await server.exited)[0], server.output()).toBe(0);
  }, 120_000);

  it("type-checks a TypeScript file against the installed declarations", async () => {
    writeFileSync(
      join(app, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: { module: "NodeNext", moduleResolution: "NodeNext", target: "ES2022", strict: true, noEmit: true, skipLibCheck: true, types: [] },
        files: ["check-types.ts"],
      }),
    );
    const tsc = createRequire(join(root, "package.json")).resolve("typescript/bin/tsc");
    const result = await run(process.execPath, [tsc, "-p", join(app, "tsconfig.json")], { cwd: app }).catch((error: { stdout: string }) => error);
    expect("stdout" in result ? result.stdout : "", "tsc reported errors").toBe("");
  }, 120_000);
});
