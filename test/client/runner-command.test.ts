import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { RESULT_MAX_BYTES } from "../../src/common/attempt-result.js";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import type { Rollout } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { workerIdFromHostname } from "../../src/client/worker-id.js";
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

/** `workerId` null: no --worker-id, so the runner takes its default. */
function startRunner(command: string, extraArgs: string[] = [], workerId: string | null = `cli-${Math.random().toString(36).slice(2, 8)}`): RunnerProcess {
  const idArgs = workerId === null ? [] : ["--worker-id", workerId];
  const child = spawn(
    process.execPath,
    ["--import", "tsx", entry, ...idArgs, "--exec", command, "--server", server.grpcAddress, ...extraArgs],
    { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, WORK_DIR: workDir } },
  );
  const output = { stdout: "", stderr: "" };
  child.stdout!.on("data", (chunk: Buffer) => (output.stdout += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output.stderr += chunk.toString()));
  const exited = once(child, "exit").then(([code]) => code as number | null);
  const runner = { child, workerId: workerId ?? workerIdFromHostname(), output, exited };
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

  it("hands the input as JSON on stdin and the ids in the environment, passing stdout through with --result none", async () => {
    const runner = startRunner(
      'cat > "$WORK_DIR/$RUNNERLINE_ATTEMPT_ID.json"; echo "ran $RUNNERLINE_ROLLOUT_ID on $RUNNERLINE_WORKER_ID"',
      ["--result", "none"],
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
    expect(done.result).toBeUndefined();
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

  it("exits 0 when an operator drains its worker, after finishing the attempt in hand", async () => {
    const runner = startRunner(`while [ ! -e "$WORK_DIR/go" ]; do sleep 0.05; done; exit 0`);
    const rollout = await enqueue(server.clients, {});
    await untilStatus(rollout, RolloutStatus.RUNNING);
    await server.clients.workers.drainWorker({ workerId: runner.workerId, reason: "host maintenance" });
    await eventually(async () => runner.output.stderr, (stderr) => stderr.includes("server asked to drain (drained by an operator: host maintenance)"));
    await writeFile(path.join(workDir, "go"), "");
    expect(await runner.exited).toBe(0);
    expect((await getRollout(rollout.rolloutId)).status).toBe(RolloutStatus.SUCCEEDED);
    const { worker } = await server.clients.workers.getWorker({ workerId: runner.workerId });
    expect(worker).toMatchObject({ cordoned: true, draining: false });
  }, 30_000);

  it.each([
    ["SIGTERM", "SIGINT", 130],
    ["SIGINT", "SIGINT", 130],
    ["SIGTERM", "SIGTERM", 143],
  ] as const)("aborts on a second signal (%s, then %s), reporting the attempt FAILED at once", async (first, second, exitCode) => {
    const runner = startRunner("sleep 30");
    const { rollout } = await server.clients.rollouts.enqueueRollout({ config: { maxAttempts: 2, retryOn: [AttemptStatus.FAILED] } });
    const running = await untilStatus(rollout!, RolloutStatus.RUNNING);
    runner.child.kill(first);
    await eventually(async () => runner.output.stderr, (stderr) => stderr.includes("draining"));
    runner.child.kill(second);
    // Reported by the runner before it closed its session: FAILED within a few seconds, not UNRESPONSIVE after the
    // server's unresponsive timeout, and the rollout waits for its retry.
    const attempt = await eventually(() => getAttempt(running.latestAttemptId), (a) => a.status !== AttemptStatus.RUNNING, 3_000);
    expect(attempt.status).toBe(AttemptStatus.FAILED);
    expect(attempt.error?.message).toBe(`the runner was stopped (runner received a second signal, ${second})`);
    expect((await getRollout(rollout!.rolloutId)).status).toBe(RolloutStatus.REQUEUING);
    expect(await runner.exited).toBe(exitCode);
    expect(runner.output.stderr).toContain(`reported ${running.latestAttemptId} as FAILED: the server confirmed the report`);
  }, 30_000);

  it("exits 2 with one line naming the worker id when a second runner starts with the same id, which keeps it", async () => {
    const first = startRunner("sleep 30", [], "laptop-1");
    await eventually(
      () => server.clients.workers.getWorker({ workerId: "laptop-1" }).catch(() => ({ worker: undefined })),
      (r) => r.worker?.connected === true,
      20_000,
    );
    const second = startRunner("cat > /dev/null; echo '{\"by\": \"second\"}'", [], "laptop-1");
    const exited = await Promise.race([first.exited, new Promise<string>((resolve) => setTimeout(() => resolve("still running"), 20_000))]);
    expect(exited).toBe(2);
    const said = first.output.stderr.split("\n").filter((line) => line.startsWith("runnerline runner:"));
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(/another runner opened a session with worker id laptop-1 from 127\.0\.0\.1:\d+/);
    // No fight: the second runner holds the worker and serves it.
    expect(second.child.exitCode).toBeNull();
    const rollout = await enqueue(server.clients, {});
    expect((await untilStatus(rollout, RolloutStatus.SUCCEEDED)).result).toBeDefined();
    expect((await getAttempt((await getRollout(rollout.rolloutId)).latestAttemptId)).workerId).toBe("laptop-1");
    const { worker } = await server.clients.workers.getWorker({ workerId: "laptop-1" });
    expect(worker?.connected).toBe(true);
  }, 60_000);

  it("takes the host name as its worker id when given none", async () => {
    startRunner("cat > /dev/null", [], null);
    const { worker } = await eventually(
      () => server.clients.workers.getWorker({ workerId: workerIdFromHostname() }).catch(() => ({ worker: undefined })),
      (r) => r.worker?.connected === true,
      20_000,
    );
    expect(worker?.workerId).toBe(workerIdFromHostname());
  }, 30_000);

  it("rejects a malformed worker id locally with exit code 2", async () => {
    const runner = startRunner("true", [], "not a valid id");
    expect(await runner.exited).toBe(2);
    expect(runner.output.stderr).toMatch(/--worker-id must be 1-128 characters/);
  }, 30_000);

  it("ends with exit code 2 and the server's message when the server refuses its Hello", async () => {
    // Capacity above the server's bound is INVALID_ARGUMENT on Hello: retrying could never help.
    const runner = startRunner("true", ["--capacity", "5000"]);
    expect(await runner.exited).toBe(2);
    expect(runner.output.stderr).toMatch(/refused this runner \(INVALID_ARGUMENT\): hello\.capacity must be between 0 and 1024/);
  }, 30_000);

  it("rejects bad arguments with usage and exit code 2", async () => {
    const runner = startRunner("true", ["--capacity", "zero"]);
    expect(await runner.exited).toBe(2);
    expect(runner.output.stderr).toMatch(/--capacity must be a positive integer/);
    expect(runner.output.stderr).toMatch(/usage: runnerline runner/);
  }, 30_000);
});

describe("runnerline runner --result", () => {
  async function resultOf(command: string, mode?: string) {
    startRunner(command, mode === undefined ? [] : ["--result", mode]);
    const rollout = await enqueue(server.clients, { question: "2+3" });
    const { rollouts } = await server.clients.rollouts.waitRollouts({ rolloutIds: [rollout.rolloutId], timeout: { seconds: 20n } });
    const done = rollouts[0]!;
    const attempt = await getAttempt(done.latestAttemptId);
    return { done, attempt, result: done.result && toJson(ValueSchema, done.result) };
  }

  it("json (the default): stdout as one JSON document is the result, on the attempt and the rollout", async () => {
    const { done, attempt, result } = await resultOf(`read input; printf '{"input": %s,\n "reward": 0.5}\n' "$input"`);
    expect(done.status).toBe(RolloutStatus.SUCCEEDED);
    expect(result).toEqual({ input: { question: "2+3" }, reward: 0.5 });
    expect(toJson(ValueSchema, attempt.result!)).toEqual(result);
  }, 30_000);

  it("json: empty stdout succeeds without a result", async () => {
    const { done } = await resultOf("cat > /dev/null");
    expect(done.status).toBe(RolloutStatus.SUCCEEDED);
    expect(done.result).toBeUndefined();
  }, 30_000);

  it("json: stdout that is not JSON fails the attempt and says what to do", async () => {
    const { done, attempt } = await resultOf('echo "the answer is 5"');
    expect(done.status).toBe(RolloutStatus.FAILED);
    expect(attempt.error?.message).toContain('stdout is not one JSON document');
    expect(attempt.error?.message).toContain('"the answer is 5"');
    expect(attempt.error?.message).toContain("--result text");
  }, 30_000);

  it("json: stdout over the bound fails the attempt with the bound", async () => {
    const { done, attempt } = await resultOf(`head -c ${RESULT_MAX_BYTES + 10} /dev/zero | tr '\\0' 7`);
    expect(done.status).toBe(RolloutStatus.FAILED);
    expect(attempt.error?.message).toBe(`stdout is ${RESULT_MAX_BYTES + 10} bytes, over the ${RESULT_MAX_BYTES}-byte bound on a result (--result json)`);
  }, 30_000);

  it("text: JSON stays JSON, anything else is the end of stdout as a string, cut to the bound", async () => {
    startRunner(
      `read input; case "$input" in
         *json*) echo "[1, 2]" ;;
         *plain*) echo "the answer is 5" ;;
         *) head -c ${2 * RESULT_MAX_BYTES} /dev/zero | tr '\\0' x; echo END ;;
       esac`,
      ["--result", "text"],
    );
    const rollouts = await Promise.all(["json", "plain", "long"].map((kind) => enqueue(server.clients, kind)));
    const waited = await server.clients.rollouts.waitRollouts({
      rolloutIds: rollouts.map((r) => r.rolloutId),
      timeout: { seconds: 20n },
    });
    expect(waited.rollouts.map((r) => r.status)).toEqual([1, 2, 3].map(() => RolloutStatus.SUCCEEDED));
    const [json, plain, long] = waited.rollouts.map((r) => toJson(ValueSchema, r.result!));
    expect(json).toEqual([1, 2]);
    expect(plain).toBe("the answer is 5\n");
    const text = long as string;
    expect(text.startsWith("…")).toBe(true);
    expect(text.endsWith("xEND\n")).toBe(true);
    expect(Buffer.byteLength(JSON.stringify(text))).toBeLessThanOrEqual(RESULT_MAX_BYTES);
  }, 30_000);

  it("rejects an unknown mode with exit code 2", async () => {
    const runner = startRunner("true", ["--result", "yaml"]);
    expect(await runner.exited).toBe(2);
    expect(runner.output.stderr).toContain("--result must be json, text or none, got yaml");
  }, 30_000);
});

describe("runnerline runner processes", () => {
  /** Pids of live processes whose environment names this worker: the shell and all it started. */
  async function processesOf(workerId: string): Promise<number[]> {
    const pids: number[] = [];
    for (const entry of await readdir("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      const environ = await readFile(`/proc/${entry}/environ`, "latin1").catch(() => "");
      const stat = await readFile(`/proc/${entry}/stat`, "latin1").catch(() => "");
      // A zombie has exited; only its parent's reaping is left.
      if (environ.split("\0").includes(`RUNNERLINE_WORKER_ID=${workerId}`) && !/^\d+ \(.*\) Z/.test(stat)) {
        pids.push(Number(entry));
      }
    }
    return pids;
  }

  it("nothing the command started outlives a SIGKILLed runner", async () => {
    const runner = startRunner("sleep 30 & sleep 30");
    const rollout = await enqueue(server.clients, {});
    await untilStatus(rollout, RolloutStatus.RUNNING);
    // The shell and both sleeps.
    await eventually(() => processesOf(runner.workerId), (pids) => pids.length >= 3);
    runner.child.kill("SIGKILL");
    await runner.exited;
    const killedAt = Date.now();
    await eventually(() => processesOf(runner.workerId), (pids) => pids.length === 0, 10_000);
    const gone = Date.now() - killedAt;
    console.log(`command's processes gone ${gone} ms after the runner was SIGKILLed`);
    expect(gone).toBeLessThan(2_000);
  }, 30_000);

  it("what a command leaves in the background ends with its attempt", async () => {
    const runner = startRunner("sleep 30 & echo '{}'");
    const rollout = await enqueue(server.clients, {});
    await untilStatus(rollout, RolloutStatus.SUCCEEDED);
    await eventually(() => processesOf(runner.workerId), (pids) => pids.length === 0, 5_000);
  }, 30_000);
});
