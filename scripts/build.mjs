// `npm run build`: compiles src/ to dist/ (tsconfig.build.json: JavaScript and .d.ts), copies the files the compiled
// code reads at run time (descriptor sets, reflection's protos, the process reaper), then stamps dist/ with the time
// the build started (bin/build-state.mjs compares it with src/). `--if-stale` does nothing when dist/ is fresh: the
// prestart/pretest hooks and the tests' global setup use it.
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, readdirSync, writeFileSync, utimesSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { PACKAGE_ROOT as root, STAMP, staleReason } from "../bin/build-state.mjs";

export function build({ ifStale = false, quiet = false } = {}) {
  const reason = staleReason(root);
  if (ifStale && reason === undefined) return;
  if (!quiet) process.stderr.write(`building dist/ (${reason ?? "requested"})\n`);
  const started = new Date();
  let tsc;
  try {
    tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  } catch {
    throw new Error(
      "building dist/ needs TypeScript, a devDependency: install with them (npm ci), or install the packed package instead",
    );
  }
  execFileSync(process.execPath, [tsc, "-p", join(root, "tsconfig.build.json")], { cwd: root, stdio: "inherit" });
  const assets = [
    ["src/cli/process-reaper.mjs", "dist/cli/process-reaper.mjs"],
    ["src/server/transport/protos", "dist/server/transport/protos"],
    ...readdirSync(join(root, "src/gen"))
      .filter((file) => file.endsWith(".binpb"))
      .map((file) => [`src/gen/${file}`, `dist/gen/${file}`]),
  ];
  for (const [from, to] of assets) cpSync(join(root, from), join(root, to), { recursive: true });
  mkdirSync(join(root, "dist"), { recursive: true });
  writeFileSync(STAMP, `${started.toISOString()}\n`);
  utimesSync(STAMP, started, started);
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  try {
    build({ ifStale: process.argv.includes("--if-stale") });
  } catch (error) {
    // tsc has printed its errors already; say what failed and exit non-zero.
    process.stderr.write(`build: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  }
}
