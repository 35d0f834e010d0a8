import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import type { Rollout } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { enqueue, eventually, startTestServer } from "./helpers.js";
import type { TestServer } from "./helpers.js";

const entry = fileURLToPath(new URL("./fixtures/runner-command-main.ts", import.meta.url));
const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

let server: TestServer;
let workDir: string;
const processes: RunnerProcess[] = [];

beforeEach(async () => {
  server = await startTestServer();
  workDir = await mkdtemp(path.join(os.tmpdir(), "runnerline-cli-"));
});

afterEach(async () => {
  for (const runner of processes.splice(0)) {
    if (runner.child.exitCode !== null || runner.child.signalCode !== null) continue;
    // Two signals abort the attempts in hand, which also ends their commands; a
    // SIGKILLed runner would leave them running in their own process groups.
    runner.child.kill("SIGTERM");
    setTimeout(() => runner.child.kill("SIGTERM"), 50);
    const killer = setTimeout(() => runner.child.kill("SIGKILL"), 5_000);
    await runner.exited;
    clearTimeout(killer);
  }
  await server.close();
  await rm(workDir, { recursive: true, force: true });
});

interface RunnerProcess {
  child: ChildProcess;
  workerId: string;
  output: { stdout: string; stderr: string };
  exited: Promise<number | null>;
}

function startRunner(command: string, extraArgs: string[] = []): RunnerProcess {
  const workerId = `cli-${Math.random().toString(36).slice(2, 8)}`;
  const child = spawn(
    process.execPath,
    ["--import", "tsx", entry, "--worker-id", workerId, "--exec", command, "--server", server.grpcAddress, ...extraArgs],
    { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, WORK_DIR: workDir } },
  );
  const output = { stdout: "", stderr: "" };
  child.stdout!.on("data", (chunk: Buffer) => (output.stdout += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output.stderr += chunk.toString()));
  const exited = once(child, "exit").then(([code]) => code as number | null);
  const runner = { child, workerId, output, exited };
  processes.push(runner);
  return runner;
}

const getRollout = (id: string) => server.clients.rollouts.getRollout({ rolloutId: id }).then((r) => r.rollout!);
const getAttempt = (id: string) => server.clients.attempts.getAttempt({ attemptId: id }).then((r) => r.attempt!);

function untilStatus(rollout: Rollout, status: RolloutStatus): Promise<Rollout> {
  return eventually(() => getRollout(rollout.rolloutId), (r) => r.status === status, 20_000);
}

describe("runnerline runner", () => {
  it("reports exit 0 as SUCCEEDED", async () => {
    const runner = startRunner("cat > /dev/null; exit 0");
    const rollout = await enqueue(server.clients, { prompt: "hello" });
    const done = await untilStatus(rollout, RolloutStatus.SUCCEEDED);
    expect((await getAttempt(done.latestAttemptId)).workerId).toBe(runner.workerId);
  }, 30_000);

  it("reports a non-zero exit as FAILED with the end of stderr", async () => {
    const runner = startRunner("echo oops >&2; exit 3");
    const rollout = await enqueue(server.clients, {});
    const failed = await untilStatus(rollout, RolloutStatus.FAILED);
    const attempt = await getAttempt(failed.latestAttemptId);
    expect(attempt.status).toBe(AttemptStatus.FAILED);
    expect(attempt.error?.message).toMatch(/exit code 3/);
    expect(attempt.error?.message).toContain("oops");
    // The child's stderr is passed through too.
    expect(runner.output.stderr).toContain("oops");
  }, 30_000);

  it("hands the input as JSON on stdin and the ids in the environment, passing stdout through", async () => {
    const runner = startRunner(
      'cat > "$WORK_DIR/$RUNNERLINE_ATTEMPT_ID.json"; echo "ran $RUNNERLINE_ROLLOUT_ID on $RUNNERLINE_WORKER_ID"',
    );
    const input = { messages: [{ role: "user", content: "2+2?" }], temperature: 0.5, nested: { ok: true } };
    const rollout = await enqueue(server.clients, input);
    const done = await untilStatus(rollout, RolloutStatus.SUCCEEDED);
    const stdin = await readFile(path.join(workDir, `${done.latestAttemptId}.json`), "utf8");
    expect(JSON.parse(stdin)).toEqual(input);
    await eventually(
      async () => runner.output.stdout,
      (stdout) => stdout.includes(`ran ${rollout.rolloutId} on ${runner.workerId}`),
    );
  }, 30_000);

  it("terminates the command when its rollout is cancelled", async () => {
    const runner = startRunner(
      `trap 'echo terminated > "$WORK_DIR/$RUNNERLINE_ATTEMPT_ID.term"; exit 1' TERM; sleep 30 & wait`,
    );
    const rollout = await enqueue(server.clients, {});
    const running = await untilStatus(rollout, RolloutStatus.RUNNING);
    await server.clients.rollouts.cancelRollout({ rolloutId: rollout.rolloutId });
    const marker = path.join(workDir, `${running.latestAttemptId}.term`);
    await eventually(() => readFile(marker, "utf8").catch(() => ""), (text) => text.trim() === "terminated");
    await eventually(async () => runner.output.stderr, (stderr) => stderr.includes(`attempt ${running.latestAttemptId} cancelled`));
    // Its slot is free again.
    const next = await enqueue(server.clients, {});
    await untilStatus(next, RolloutStatus.RUNNING);
  }, 30_000);

  it("drains on SIGTERM: finishes the attempt in hand, then exits 0", async () => {
    const runner = startRunner("sleep 1; exit 0");
    const rollout = await enqueue(server.clients, {});
    await untilStatus(rollout, RolloutStatus.RUNNING);
    runner.child.kill("SIGTERM");
    expect(await runner.exited).toBe(0);
    expect((await getRollout(rollout.rolloutId)).status).toBe(RolloutStatus.SUCCEEDED);
    expect(runner.output.stderr).toMatch(/SIGTERM: draining/);
  }, 30_000);

  it("aborts on a second signal", async () => {
    const runner = startRunner("sleep 30");
    const rollout = await enqueue(server.clients, {});
    await untilStatus(rollout, RolloutStatus.RUNNING);
    runner.child.kill("SIGTERM");
    await eventually(async () => runner.output.stderr, (stderr) => stderr.includes("draining"));
    runner.child.kill("SIGINT");
    expect(await runner.exited).toBe(130);
  }, 30_000);

  it("rejects bad arguments with usage and exit code 2", async () => {
    const runner = startRunner("true", ["--capacity", "zero"]);
    expect(await runner.exited).toBe(2);
    expect(runner.output.stderr).toMatch(/--capacity must be a positive integer/);
    expect(runner.output.stderr).toMatch(/usage: runnerline runner/);
  }, 30_000);
});
