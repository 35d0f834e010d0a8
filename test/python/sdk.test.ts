/**
 * The Python SDK (python/) as a user installs it: `pip install ./python` into a fresh virtual environment
 * that sees Debian's python3-grpcio, python3-protobuf and python3-psutil (offline: --no-index, and
 * --no-build-isolation so that Debian's setuptools builds it), then its pytest suite (python/tests), which
 * starts real servers with `node bin/runnerline.mjs serve` and runs runners and training loops against them.
 *
 * Prerequisites (Debian): python3-grpcio python3-protobuf python3-psutil python3-pytest python3-venv
 * python3-setuptools; .ci/run installs them. Missing ones fail the test with that list rather than skipping it.
 */
import { execFile } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const PYTHON = "/usr/bin/python3"; // Debian's, where the python3-* packages live
const PACKAGES = "python3-grpcio python3-protobuf python3-psutil python3-pytest python3-venv python3-setuptools";

interface Run {
  code: number | null;
  output: string;
}

function run(file: string, args: string[], timeoutMs: number, env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { cwd: ROOT, timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: 32 * 1024 * 1024, env: { ...process.env, ...env } },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : null) : 0;
        const spawnFailure = error && typeof error.code === "string" ? `${error.message}\n` : "";
        resolve({ code, output: `${spawnFailure}${stdout}${stderr}` });
      },
    );
  });
}

const scratch = mkdtempSync(join(tmpdir(), "runnerline-pysdk-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("the Python SDK", () => {
  it("installs with pip from python/ and passes its pytest suite against real servers", async () => {
    const probe = existsSync(PYTHON)
      ? await run(PYTHON, ["-c", "import grpc, google.protobuf, psutil, pytest, venv, setuptools"], 20_000)
      : { code: 1, output: `${PYTHON} is missing` };
    if (probe.code !== 0) {
      throw new Error(`the Python SDK's tests need Debian packages ${PACKAGES} (apt-get install -y --no-install-recommends ${PACKAGES}; .ci/run does this):\n${probe.output}`);
    }

    // A copy, so that pip's in-tree build leaves nothing behind in python/.
    const source = join(scratch, "python");
    cpSync(join(ROOT, "python"), source, {
      recursive: true,
      filter: (path) => !["build", "__pycache__", ".pytest_cache"].includes(basename(path)) && !path.endsWith(".egg-info"),
    });
    const venv = join(scratch, "venv");
    const created = await run(PYTHON, ["-m", "venv", "--system-site-packages", venv], 60_000);
    expect(created.code, `python3 -m venv failed:\n${created.output}`).toBe(0);
    const installed = await run(join(venv, "bin/pip"), ["install", "--quiet", "--no-build-isolation", "--no-index", source], 120_000);
    expect(installed.code, `pip install ./python failed:\n${installed.output}`).toBe(0);

    const tests = await run(
      join(venv, "bin/python"),
      ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", join(ROOT, "python/tests"), join(ROOT, "python/tests")],
      300_000,
      { RUNNERLINE_NODE: process.execPath, RUNNERLINE_REPO: ROOT, PYTHONDONTWRITEBYTECODE: "1" },
    );
    expect(tests.code, `pytest failed (exit ${tests.code}):\n${tests.output}`).toBe(0);
    expect(tests.output).toMatch(/\d+ passed/);
    expect(tests.output).not.toMatch(/\d+ (failed|error)/);
  }, 420_000);
});
