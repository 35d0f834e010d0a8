import { execFile } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, unlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { staleReason } from "../../bin/build-state.mjs";

// The stale-build guard: bin/runnerline.mjs never runs a dist/ older than src/ (docs: README, "Layout").
const root = new URL("../..", import.meta.url).pathname;
let dir: string;
const past = new Date(Date.now() - 60_000);
const later = new Date(Date.now() - 30_000);

/** A checkout in `dir`: src/ with two files, both older than the build stamp. */
function checkout(): void {
  mkdirSync(join(dir, "src/cli"), { recursive: true });
  mkdirSync(join(dir, "dist"), { recursive: true });
  for (const file of ["src/cli/main.ts", "src/a.ts"]) {
    writeFileSync(join(dir, file), "export {};\n");
    utimesSync(join(dir, file), past, past);
  }
  for (const folder of ["src/cli", "src"]) utimesSync(join(dir, folder), past, past);
  writeFileSync(join(dir, "dist/.build-stamp"), "");
  utimesSync(join(dir, "dist/.build-stamp"), later, later);
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "runnerline-build-state-"));
});

afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("staleReason", () => {
  it("is undefined in an installed package (no src/) and for a build newer than every source", () => {
    expect(staleReason(dir)).toBeUndefined();
    checkout();
    expect(staleReason(dir)).toBeUndefined();
  });

  it("names what changed since the build: a source, a tsconfig, a deleted file; or a missing build", () => {
    checkout();
    writeFileSync(join(dir, "src/cli/main.ts"), "export const changed = 1;\n");
    expect(staleReason(dir)).toBe("src/cli/main.ts changed since dist/ was built");

    checkout();
    writeFileSync(join(dir, "tsconfig.build.json"), "{}");
    expect(staleReason(dir)).toBe("tsconfig.build.json changed since dist/ was built");
    unlinkSync(join(dir, "tsconfig.build.json"));

    checkout();
    unlinkSync(join(dir, "src/a.ts"));
    expect(staleReason(dir)).toBe("src changed since dist/ was built");

    checkout();
    unlinkSync(join(dir, "dist/.build-stamp"));
    expect(staleReason(dir)).toBe("dist/ has not been built");
  });
});

describe("bin/runnerline.mjs", () => {
  it("refuses to run an outdated dist/, saying how to rebuild it", async () => {
    checkout();
    cpSync(join(root, "bin"), join(dir, "bin"), { recursive: true });
    writeFileSync(join(dir, "src/a.ts"), "export const edited = true;\n");
    const result = await promisify(execFile)(process.execPath, [join(dir, "bin/runnerline.mjs"), "--version"]).catch(
      (error: { code: number; stderr: string }) => error,
    );
    expect(result).toMatchObject({ code: 1, stderr: "runnerline: src/a.ts changed since dist/ was built; run `npm run build` first\n" });
  });

  it("answers --version without loading any dependency (the CLI's cold start)", async () => {
    // A resolve hook lists every module the command loads.
    const hooks = join(dir, "hooks.mjs");
    writeFileSync(hooks, 'export async function resolve(s, c, next) { const r = await next(s, c); process.stderr.write("LOADED " + r.url + "\\n"); return r; }\n');
    writeFileSync(join(dir, "register.mjs"), `import { register } from "node:module"; register(${JSON.stringify(`file://${hooks}`)});\n`);
    const { stdout, stderr } = await promisify(execFile)(process.execPath, ["--import", join(dir, "register.mjs"), join(root, "bin/runnerline.mjs"), "--version"]);
    expect(stdout).toMatch(/^\d+\.\d+\.\d+\n$/);
    const loaded = stderr.split("\n").filter((line) => line.startsWith("LOADED file:")).map((line) => line.slice("LOADED file://".length).replace(root, ""));
    expect(loaded.sort()).toEqual(["bin/build-state.mjs", "bin/runnerline.mjs", "dist/cli/main.js"]);
  });
});
