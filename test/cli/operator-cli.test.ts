import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync, writeFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SERVE_FLAGS } from "../../src/cli/serve-command.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { tempDatabasePath } from "../harness.js";
import { eventually, freePort } from "../polling.js";
import { type ScriptedRunner, startScriptedRunner } from "../e2e/scripted-runner.js";
import { makeCertificates } from "../security/certificates.js";
import { TOKENS, writeAuthFile } from "../security/tokens.js";

/**
 * The operator commands as an operator runs them: child processes of
 * `runnerline` against a real server, output parsed, exit codes checked
 * (0 ok, 1 usage, 2 server error, 3 wait timed out, 4 a waited rollout did
 * not succeed).
 */
const root = new URL("../..", import.meta.url).pathname;
const version = (await import("../../package.json", { with: { type: "json" } })).default.version;

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function spawnCli(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  return spawn(process.execPath, ["--import", "tsx", `${root}src/cli/main.ts`, ...args], {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NO_COLOR: "1", ...env },
  });
}

async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Result> {
  const child = spawnCli(args, { RUNNERLINE_SERVER: server, ...env });
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  const [code] = (await once(child, "exit")) as [number | null];
  return { code, stdout, stderr };
}

const jsonLines = (text: string) =>
  text
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as Record<string, unknown>);

let running: RunningServer;
let server: string;
const runners: ScriptedRunner[] = [];

beforeAll(async () => {
  running = await startServer({ grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", store: `sqlite:${tempDatabasePath()}`, log: () => {} });
  server = `127.0.0.1:${running.grpcPort}`;
});

afterAll(async () => {
  for (const runner of runners) runner.drop();
  await running.close();
});

describe("runnerline help and usage", () => {
  it("prints help and version to stdout with exit 0, and lists every serve flag", async () => {
    const [help, versionOut, serveHelp, listHelp] = await Promise.all([
      cli(["--help"]),
      cli(["--version"]),
      cli(["serve", "--help"]),
      cli(["rollouts", "enqueue", "--help"]),
    ]);
    expect(help).toMatchObject({ code: 0, stderr: "" });
    for (const command of ["serve", "runner", "workers", "rollouts", "attempts", "summary"]) expect(help.stdout).toContain(command);
    expect(versionOut).toMatchObject({ code: 0, stdout: `${version}\n` });
    expect(serveHelp.code).toBe(0);
    expect(serveHelp.stdout).toContain("Usage: runnerline serve");
    for (const flag of SERVE_FLAGS) {
      expect(serveHelp.stdout).toContain(`--${flag.flag} `);
      expect(serveHelp.stdout.replace(/\s+/g, " ")).toContain(flag.env);
    }
    const readme = readFileSync(`${root}README.md`, "utf8");
    for (const flag of SERVE_FLAGS) {
      const usage = flag.value === "" ? `--${flag.flag}` : `--${flag.flag} ${flag.value}`;
      expect(readme).toContain(`| \`${usage}\` | \`${flag.env}\` |`);
    }
    expect(listHelp).toMatchObject({ code: 0 });
    for (const flag of ["--max-attempts", "--label", "--priority", "--retry-delay", "--retry-backoff", "--max-retry-delay"]) expect(listHelp.stdout).toContain(flag);
    for (const flag of ["--token", "--tls-ca", "--tls-cert", "--tls-key", "RUNNERLINE_TOKEN", "RUNNERLINE_TLS_CA"]) expect(help.stdout).toContain(flag);
  }, 60_000);

  it("answers usage mistakes with exit 1 and a message on stderr", async () => {
    const results = await Promise.all([
      cli(["bogus"]),
      cli(["rollouts", "enqueue"]),
      cli(["workers", "list", "--status", "sleepy"]),
      cli(["rollouts", "enqueue", "--input", "{not json"]),
      cli(["serve", "--retain", "forever"]),
      cli([]),
      cli(["serve", "--sqlite-synchronous", "bogus"]),
      cli(["serve", "--quarantine-max-percent", "150"]),
      cli(["serve", "--forget-after", "never"]),
    ]);
    for (const result of results) {
      expect(result.code).toBe(1);
      expect(result.stderr).not.toBe("");
    }
    expect(results[1]!.stderr).toContain("give exactly one of --input and --file");
    expect(results[2]!.stderr).toContain('unknown worker status "sleepy"');
    expect(results[4]!.stderr).toContain("--retain must be a positive duration");
    expect(results[6]!.stderr).toBe("runnerline serve: --sqlite-synchronous must be one of normal, full\n");
    expect(results[7]!.stderr).toContain("--quarantine-max-percent must be a percentage from 0 to 100");
    expect(results[8]!.stderr).toContain("--forget-after must be a positive duration");
  }, 60_000);

  it("answers server errors with exit 2 and the gRPC code and message on stderr", async () => {
    const nobody = `127.0.0.1:${await freePort()}`;
    const [missing, badFilter, unreachable] = await Promise.all([
      cli(["rollouts", "get", "nope"]),
      cli(["workers", "list", "--filter", "status = IDLE AND bogus = 1"]),
      cli(["summary"], { RUNNERLINE_SERVER: nobody }),
    ]);
    expect(missing).toMatchObject({ code: 2, stdout: "", stderr: "runnerline: NOT_FOUND: rollout nope not found\n" });
    expect(badFilter.code).toBe(2);
    expect(badFilter.stderr).toMatch(/^runnerline: INVALID_ARGUMENT: filter: unknown field "bogus".*\(at position 19\)/);
    expect(unreachable.code).toBe(2);
    expect(unreachable.stderr).toMatch(/^runnerline: UNAVAILABLE: /);
  }, 60_000);
});

describe("runnerline operator commands against a fleet", () => {
  it("enqueues, waits, lists, inspects and summarizes", async () => {
    runners.push(await startScriptedRunner(server, "cli-runner", { labels: { gpu: "h100" }, heartbeatEveryMs: 1_000 }));
    const single = await cli(["rollouts", "enqueue", "--input", '{"outcome":"succeed","result":{"reward":1,"answer":"five"}}', "--id", "c-1", "--max-attempts", "2", "--retry-on", "failed", "--timeout", "30s"]);
    expect(single).toMatchObject({ code: 0, stdout: "c-1\n" });

    const file = `${tempDatabasePath("batch.jsonl")}`;
    const long = `${"x".repeat(100)}-end`;
    writeFileSync(file, ['{"rolloutId":"b-1","input":{"outcome":"succeed"}}', "", '{"rolloutId":"b-2","input":{"outcome":"fail"}}', `{"rolloutId":"b-3","input":{"outcome":"succeed","result":"${long}"},"mode":"ROLLOUT_MODE_VAL"}`].join("\n"));
    const batch = await cli(["--json", "rollouts", "enqueue", "--file", file, "--mode", "train"]);
    expect(batch.code).toBe(0);
    const enqueued = jsonLines(batch.stdout);
    expect(enqueued.map((r) => [r.rolloutId, r.mode])).toEqual([
      ["b-1", "ROLLOUT_MODE_TRAIN"],
      ["b-2", "ROLLOUT_MODE_TRAIN"],
      ["b-3", "ROLLOUT_MODE_VAL"],
    ]);

    // Exit 4: one of them ended FAILED, and stderr says which; the results come whole with --json.
    const waited = await cli(["rollouts", "wait", "c-1", "b-1", "b-2", "b-3", "--json"]);
    expect(waited.code).toBe(4);
    expect(waited.stderr).toBe("runnerline: 1 rollout did not succeed: b-2 FAILED (attempt 1 ended FAILED: boom)\n");
    expect(jsonLines(waited.stdout).map((r) => [r.rolloutId, r.status, r.result])).toEqual([
      ["c-1", "ROLLOUT_STATUS_SUCCEEDED", { reward: 1, answer: "five" }],
      ["b-1", "ROLLOUT_STATUS_SUCCEEDED", undefined],
      ["b-2", "ROLLOUT_STATUS_FAILED", undefined],
      ["b-3", "ROLLOUT_STATUS_SUCCEEDED", long],
    ]);
    const waitedOk = await cli(["rollouts", "wait", "c-1", "b-3"]);
    expect(waitedOk).toMatchObject({ code: 0, stderr: "" });
    const okLines = waitedOk.stdout.split("\n");
    expect(okLines[0]).toMatch(/^ROLLOUT\s+STATUS\s+RESULT\s+FAILURE\s*$/);
    expect(okLines[1]).toMatch(/^c-1\s+SUCCEEDED\s+\{"reward":1,"answer":"five"\}\s+-\s*$/);
    // Cut in the table, the cut marked: 40 characters with the "…".
    expect(okLines[2]).toMatch(new RegExp(`^b-3\\s+SUCCEEDED\\s+"${"x".repeat(38)}…\\s+-\\s*$`));
    expect(okLines[3]).toBe("2/2 finished: 2 SUCCEEDED");
    const waitedText = await cli(["rollouts", "wait", "c-1", "b-2"]);
    expect(waitedText.code).toBe(4);
    expect(waitedText.stdout).toMatch(/^b-2\s+FAILED\s+-\s+attempt 1 ended FAILED: boom\s*$/m);
    expect(waitedText.stdout.endsWith("2/2 finished: 1 SUCCEEDED, 1 FAILED\n")).toBe(true);
    expect(waitedText.stderr).toMatch(/^runnerline: 1 rollout did not succeed: b-2 FAILED/);

    const [failed, got, gotJson, attempts, workers, worker, summary, table] = await Promise.all([
      cli(["rollouts", "list", "--json", "--filter", "status = FAILED"]),
      cli(["rollouts", "get", "c-1"]),
      cli(["rollouts", "get", "c-1", "--json"]),
      cli(["attempts", "list", "--worker", "cli-runner", "--json", "--sort", "create_time"]),
      cli(["workers", "list", "--label", "gpu=h100"]),
      cli(["workers", "get", "cli-runner", "--json"]),
      cli(["summary", "--json"]),
      cli(["rollouts", "list", "--status", "succeeded", "--sort", "rollout_id:desc", "--limit", "2"]),
    ]);
    expect(jsonLines(failed.stdout).map((r) => r.rolloutId)).toEqual(["b-2"]);
    expect(got.code).toBe(0);
    expect(got.stdout).toMatch(/^rollout\s+c-1$/m);
    expect(got.stdout).toMatch(/^status\s+SUCCEEDED$/m);
    expect(got.stdout).toMatch(/^result\s+\{"reward":1,"answer":"five"\}$/m);
    expect(got.stdout).toMatch(/ATTEMPT\s+ROLLOUT\s+#\s+WORKER\s+STATUS/);
    expect(got.stdout).toMatch(/c-1\s+1\s+cli-runner\s+SUCCEEDED/);
    const detail = jsonLines(gotJson.stdout);
    expect(detail).toHaveLength(1);
    expect(detail[0]).toMatchObject({ rolloutId: "c-1", status: "ROLLOUT_STATUS_SUCCEEDED", result: { reward: 1, answer: "five" }, config: { maxAttempts: 2, timeout: "30s" } });
    expect((detail[0]!.attempts as { workerId: string }[]).map((a) => a.workerId)).toEqual(["cli-runner"]);
    expect(jsonLines(attempts.stdout).map((a) => a.rolloutId)).toEqual(["c-1", "b-1", "b-2", "b-3"]);
    expect(workers.stdout).toMatch(/^WORKER\s+STATUS\s+CONN\s+USED\s+LABELS\s+LAST HEARTBEAT\s*$/m);
    expect(workers.stdout).toMatch(/^cli-runner\s+IDLE\s+yes\s+0\/1\s+gpu=h100\s+\d+ s ago\s*$/m);
    expect(jsonLines(worker.stdout)[0]).toMatchObject({ workerId: "cli-runner", status: "WORKER_STATUS_IDLE", labels: { gpu: "h100" } });
    expect(jsonLines(summary.stdout)[0]).toMatchObject({
      summary: { workers: { total: 1, idle: 1, connected: 1 }, rollouts: { total: 4, succeeded: 3, failed: 1 }, totalCapacity: 1 },
    });
    expect(table.stdout.split("\n").filter((l) => /^[bc]-\d/.test(l)).map((l) => l.split(/\s+/)[0])).toEqual(["c-1", "b-3"]);
    expect(table.stdout).toMatch(/^ROLLOUT\s+STATUS\s+ATTEMPTS\s+CREATED\s+ENDED\s+RESULT\s*$/m);
    expect(table.stdout).toMatch(/^c-1\s+SUCCEEDED\s+1\s+.*\s+\{"reward":1,"answer":"five"\}\s*$/m);
    expect(table.stdout).toMatch(new RegExp(`^b-3\\s+SUCCEEDED\\s+1\\s+.*\\s+"${"x".repeat(38)}…\\s*$`, "m"));
    const succeededJson = jsonLines((await cli(["rollouts", "list", "--json", "--filter", 'rollout_id = "b-3"'])).stdout);
    expect(succeededJson.map((r) => r.result)).toEqual([long]);
    expect(table.stderr).toBe("(2 of 3 shown; --limit 0 shows all)\n");
  }, 120_000);

  it("cancels, and `rollouts wait` exits 3 when its timeout passes first", async () => {
    const held = await cli(["rollouts", "enqueue", "--input", '{"outcome":"silent"}', "--id", "held"]);
    expect(held.code).toBe(0);
    await eventually(async () => (await cli(["rollouts", "get", "held", "--json"])).stdout, (out) => out.includes("ROLLOUT_STATUS_PREPARING"));
    const queued = await cli(["rollouts", "enqueue", "--input", '{"outcome":"succeed"}', "--id", "queued"]);
    expect(queued.code).toBe(0);
    const waited = await cli(["rollouts", "wait", "held", "--timeout", "1s"]);
    expect(waited).toMatchObject({ code: 3, stderr: "" });
    expect(waited.stdout).toMatch(/^held\s+UNFINISHED\s+-\s+-\s*\n0\/1 finished: 1 UNFINISHED\n$/m);
    const cancelled = await cli(["rollouts", "cancel", "held", "queued", "missing"]);
    expect(cancelled.code).toBe(2);
    expect(cancelled.stdout).toBe("held CANCELLED\nqueued CANCELLED\n");
    expect(cancelled.stderr).toBe("runnerline: cannot cancel missing: NOT_FOUND: rollout missing not found\n");
    // CANCELLED is not success either: exit 4, both named.
    const afterCancel = await cli(["rollouts", "wait", "held", "queued", "--json"]);
    expect(afterCancel.code).toBe(4);
    expect(afterCancel.stderr).toMatch(/^runnerline: 2 rollouts did not succeed: held CANCELLED.*, queued CANCELLED/);
  }, 120_000);

  it("`workers watch` without a terminal prints one line per change", async () => {
    const watch = spawnCli(["workers", "watch", "--filter", 'worker_id : "watched"'], { RUNNERLINE_SERVER: server });
    let stdout = "";
    watch.stdout!.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    try {
      const first = await startScriptedRunner(server, "watched-1");
      runners.push(first);
      await eventually(async () => stdout, (out) => /watched-1 IDLE connected=true/.test(out), 30_000);
      const second = await startScriptedRunner(server, "watched-2");
      await eventually(async () => stdout, (out) => /watched-2 IDLE connected=true/.test(out), 30_000);
      await second.leave();
      await eventually(async () => stdout, (out) => /watched-2 OFFLINE connected=false/.test(out), 30_000);
      const lines = stdout.split("\n").filter((l) => l !== "");
      for (const line of lines) expect(line).toMatch(/^\d{4}-\d\d-\d\dT\S+Z watched-\d (IDLE|BUSY|UNKNOWN|OFFLINE) connected=(true|false)/);
      expect(lines.some((l) => l.includes("cli-runner"))).toBe(false);
    } finally {
      watch.kill("SIGINT");
    }
    const [code] = (await once(watch, "exit")) as [number | null];
    expect(code).toBe(0);
  }, 120_000);

  it("`workers delete` removes an OFFLINE worker, refuses a connected one", async () => {
    const refused = await cli(["workers", "delete", "cli-runner"]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/^runnerline: FAILED_PRECONDITION: worker cli-runner (is IDLE|holds a runner session)/);
    await eventually(async () => (await cli(["workers", "get", "watched-2", "--json"])).stdout, (out) => out.includes("WORKER_STATUS_OFFLINE"));
    expect(await cli(["workers", "delete", "watched-2"])).toMatchObject({ code: 0, stdout: "deleted watched-2\n" });
    expect((await cli(["workers", "get", "watched-2"])).code).toBe(2);
  }, 120_000);
});

describe("routing, retry and quarantine through the CLI", () => {
  it("enqueue carries --label, --priority and the retry delays, on the command line and per --file line", async () => {
    const flags = await cli([
      "rollouts", "enqueue", "--input", '{"outcome":"succeed"}', "--id", "routed-1", "--label", "pool=nowhere", "--label", "zone=b",
      "--priority", "5", "--retry-delay", "2s", "--retry-backoff", "1.5", "--max-retry-delay", "1m", "--max-attempts", "3",
    ]);
    expect(flags).toMatchObject({ code: 0, stdout: "routed-1\n" });
    const file = tempDatabasePath("routed.jsonl");
    writeFileSync(file, [
      '{"rolloutId":"routed-2","input":{},"priority":7,"config":{"requiredLabels":{"pool":"elsewhere"},"retryDelay":"3s","retryBackoffCoefficient":3,"maxRetryDelay":"90s"}}',
      '{"rolloutId":"routed-3","input":{}}',
    ].join("\n"));
    const batch = await cli(["rollouts", "enqueue", "--file", file, "--priority", "2", "--label", "pool=nowhere"]);
    expect(batch).toMatchObject({ code: 0, stdout: "routed-2\nrouted-3\n" });
    const [one, two, three] = await Promise.all(["routed-1", "routed-2", "routed-3"].map((id) => cli(["rollouts", "get", id, "--json"])));
    expect(jsonLines(one!.stdout)[0]).toMatchObject({
      priority: 5,
      config: { maxAttempts: 3, requiredLabels: { pool: "nowhere", zone: "b" }, retryDelay: "2s", retryBackoffCoefficient: 1.5, maxRetryDelay: "60s" },
    });
    expect(jsonLines(two!.stdout)[0]).toMatchObject({
      priority: 7,
      config: { requiredLabels: { pool: "elsewhere" }, retryDelay: "3s", retryBackoffCoefficient: 3, maxRetryDelay: "90s" },
    });
    expect(jsonLines(three!.stdout)[0]).toMatchObject({ priority: 2, config: { requiredLabels: { pool: "nowhere" } } });

    const mistakes = await Promise.all([
      cli(["rollouts", "enqueue", "--input", "{}", "--label", "nolabel"]),
      cli(["rollouts", "enqueue", "--input", "{}", "--priority", "high"]),
      cli(["rollouts", "enqueue", "--input", "{}", "--retry-backoff", "0.5"]),
      cli(["rollouts", "enqueue", "--input", "{}", "--retry-delay", "soon"]),
    ]);
    expect(mistakes.map((m) => m.code)).toEqual([1, 1, 1, 1]);
    expect(mistakes[0]!.stderr).toContain('--label expects KEY=VALUE, not "nolabel"');
    expect(mistakes[1]!.stderr).toContain('--priority must be a whole number, not "high"');
    expect(mistakes[2]!.stderr).toContain('--retry-backoff must be a number ≥ 1, not "0.5"');
    expect(mistakes[3]!.stderr).toContain("--retry-delay must be a positive duration");
  }, 120_000);

  it("shows a quarantined worker in list, get, watch and summary, and `workers release` lifts it", async () => {
    const watch = spawnCli(["workers", "watch", "--filter", 'worker_id = "flaky"'], { RUNNERLINE_SERVER: server });
    let watched = "";
    watch.stdout!.setEncoding("utf8").on("data", (chunk: string) => (watched += chunk));
    try {
      runners.push(await startScriptedRunner(server, "flaky", { labels: { pool: "flaky" }, heartbeatEveryMs: 1_000 }));
      // A runner is judged against the rest of the fleet, never alone: a healthy one is connected beside it.
      runners.push(await startScriptedRunner(server, "steady", { labels: { pool: "steady" }, heartbeatEveryMs: 1_000 }));
      // The server's default policy: three failures in a row within a minute quarantine the worker.
      const ids = ["flaky-1", "flaky-2", "flaky-3"];
      for (const id of ids) {
        const enqueued = await cli(["rollouts", "enqueue", "--input", '{"outcome":"fail"}', "--id", id, "--label", "pool=flaky", "--max-attempts", "1"]);
        expect(enqueued.code).toBe(0);
      }
      const waited = await cli(["rollouts", "wait", ...ids, "--timeout", "60s"]);
      expect(waited.code).toBe(4);
      expect(waited.stdout.endsWith("3/3 finished: 3 FAILED\n")).toBe(true);
      expect(waited.stderr).toMatch(/^runnerline: 3 rollouts did not succeed: flaky-1 FAILED \(attempt 1 ended FAILED: boom\), flaky-2 FAILED/);
      const quarantined = await eventually(
        async () => jsonLines((await cli(["workers", "get", "flaky", "--json"])).stdout)[0]!,
        (worker) => worker.quarantineUntil !== undefined,
      );
      expect(quarantined.quarantineReason).not.toBe("");
      await eventually(async () => watched, (out) => /flaky IDLE connected=true quarantined_until=\d{4}-\S+Z/.test(out), 30_000);

      const [list, wide, get, summary] = await Promise.all([
        cli(["workers", "list", "--filter", 'worker_id = "flaky"']),
        cli(["workers", "list", "--wide", "--filter", 'worker_id = "flaky"']),
        cli(["workers", "get", "flaky"]),
        cli(["summary"]),
      ]);
      expect(list.stdout).toMatch(/^flaky\s+IDLE QUARANTINED\s+yes\s+0\/1\s+pool=flaky/m);
      expect(wide.stdout).toMatch(/QUARANTINE\s*$/m);
      expect(wide.stdout).toContain(`until ${quarantined.quarantineUntil as string}`);
      expect(wide.stdout).toContain(`: ${quarantined.quarantineReason as string}`);
      expect(get.stdout).toMatch(/^quarantine\s+until \d{4}-\S+Z \(in \d+ s\): \S/m);
      expect(summary.stdout).toMatch(/^quarantined\s+1$/m);
      // routed-1 and routed-3 need pool=nowhere, routed-2 pool=elsewhere: no connected worker carries them.
      expect(summary.stdout).toMatch(/^unroutable\s+3$/m);

      const released = await cli(["workers", "release", "flaky"]);
      expect(released).toMatchObject({ code: 0, stdout: "released flaky (IDLE)\n", stderr: "" });
      const after = jsonLines((await cli(["workers", "get", "flaky", "--json"])).stdout)[0]!;
      expect(after.quarantineUntil).toBeUndefined();
      expect(after.quarantineCount).toBeUndefined();
      expect((await cli(["workers", "list", "--filter", 'worker_id = "flaky"'])).stdout).toMatch(/^flaky\s+IDLE\s+yes/m);
      expect((await cli(["summary"])).stdout).toMatch(/^quarantined\s+0$/m);

      const [again, missing] = await Promise.all([cli(["workers", "release", "flaky"]), cli(["workers", "release", "nobody"])]);
      expect(again.code).toBe(2);
      expect(again.stderr).toMatch(/^runnerline: FAILED_PRECONDITION: .*flaky/);
      expect(missing.code).toBe(2);
      expect(missing.stderr).toMatch(/^runnerline: NOT_FOUND: .*nobody/);
    } finally {
      watch.kill("SIGINT");
    }
    await once(watch, "exit");
  }, 180_000);
});

describe("workers cordon, uncordon and drain", () => {
  it("keep a worker from new work, show it in list and get, and refuse precisely", async () => {
    runners.push(await startScriptedRunner(server, "maint", { labels: { pool: "maint" }, heartbeatEveryMs: 1_000 }));
    await eventually(async () => jsonLines((await cli(["workers", "get", "maint", "--json"])).stdout)[0]!, (w) => w.lastDequeueTime !== undefined);
    const cordoned = await cli(["workers", "cordon", "maint", "--reason", "disk swap"]);
    expect(cordoned).toMatchObject({ code: 0, stdout: "cordoned maint (IDLE)\n", stderr: "" });
    expect((await cli(["workers", "list", "--filter", "cordoned = true"])).stdout).toMatch(/^maint\s+IDLE CORDONED\s+yes/m);
    expect((await cli(["workers", "get", "maint"])).stdout).toMatch(/^cordon\s+since \S+ \(.*\): disk swap$/m);
    expect((await cli(["rollouts", "enqueue", "--input", '{"outcome":"succeed"}', "--id", "maint-1", "--label", "pool=maint"])).code).toBe(0);
    expect(jsonLines((await cli(["rollouts", "get", "maint-1", "--json"])).stdout)[0]!.status).toBe("ROLLOUT_STATUS_QUEUING");

    const json = jsonLines((await cli(["workers", "uncordon", "maint", "--json"])).stdout)[0]!;
    expect(json).toMatchObject({ workerId: "maint" });
    expect(json.cordoned).toBeUndefined();
    expect((await cli(["rollouts", "wait", "maint-1", "--timeout", "30s"])).stdout).toMatch(/^maint-1 +SUCCEEDED .*\n1\/1 finished: 1 SUCCEEDED\n$/m);

    const drained = await cli(["workers", "drain", "maint", "--reason", "kernel"]);
    expect(drained).toMatchObject({ code: 0, stdout: "draining maint (IDLE)\n", stderr: "" });
    expect((await cli(["workers", "list", "--filter", 'worker_id = "maint"'])).stdout).toMatch(/^maint\s+IDLE DRAINING\s+yes/m);

    const [missing, usage, long] = await Promise.all([
      cli(["workers", "drain", "nobody"]),
      cli(["workers", "cordon"]),
      cli(["workers", "cordon", "maint", "--reason", "x".repeat(1025)]),
    ]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^runnerline: NOT_FOUND: worker nobody not found/);
    expect(usage.code).toBe(1);
    expect(long.code).toBe(2);
    expect(long.stderr).toMatch(/^runnerline: INVALID_ARGUMENT: reason is 1025 characters long; at most 1024/);
  }, 120_000);
});

describe("the operator commands against a server with tokens and TLS", () => {
  const certs = makeCertificates("cli");
  let secured: RunningServer;
  let mutual: RunningServer;
  let address: string;

  beforeAll(async () => {
    const common = { grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", store: "memory", log: () => {} } as const;
    secured = await startServer({ ...common, authFile: writeAuthFile(), tls: { cert: certs.server.certPath, key: certs.server.keyPath } });
    mutual = await startServer({ ...common, tls: { cert: certs.server.certPath, key: certs.server.keyPath, clientCa: certs.ca.certPath } });
    address = `127.0.0.1:${secured.grpcPort}`;
  });

  afterAll(async () => {
    await Promise.all([secured?.close(), mutual?.close()]);
  });

  it("sends --token / RUNNERLINE_TOKEN over TLS from --tls-ca / RUNNERLINE_TLS_CA; the server's roles decide", async () => {
    const tlsEnv = { RUNNERLINE_SERVER: address, RUNNERLINE_TLS_CA: certs.ca.certPath };
    const [anonymous, wrong, operator, operatorEnqueue, admin, plaintext, missingCa] = await Promise.all([
      cli(["workers", "list"], tlsEnv),
      cli(["workers", "list", "--token", "not-a-token"], tlsEnv),
      cli(["workers", "list", "--token", TOKENS.operator], tlsEnv),
      cli(["rollouts", "enqueue", "--input", "{}"], { ...tlsEnv, RUNNERLINE_TOKEN: TOKENS.operator }),
      cli(["--tls-ca", certs.ca.certPath, "rollouts", "enqueue", "--input", "{}", "--id", "by-admin"], { RUNNERLINE_SERVER: address, RUNNERLINE_TOKEN: TOKENS.admin }),
      cli(["workers", "list", "--token", TOKENS.operator], { RUNNERLINE_SERVER: address }),
      cli(["workers", "list", "--tls-ca", `${certs.folder}/missing.crt`], { RUNNERLINE_SERVER: address }),
    ]);
    expect(anonymous.code).toBe(2);
    expect(anonymous.stderr).toMatch(/^runnerline: UNAUTHENTICATED: /);
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toMatch(/^runnerline: UNAUTHENTICATED: /);
    expect(operator).toMatchObject({ code: 0, stderr: "" });
    expect(operator.stdout).toMatch(/^WORKER\s+STATUS/);
    expect(operatorEnqueue.code).toBe(2);
    expect(operatorEnqueue.stderr).toMatch(/^runnerline: PERMISSION_DENIED: .*operator/);
    expect(admin).toMatchObject({ code: 0, stdout: "by-admin\n", stderr: "" });
    expect(plaintext.code).toBe(2);
    expect(plaintext.stderr).toMatch(/^runnerline: [A-Z_]+: /);
    expect(missingCa.code).toBe(1);
    expect(missingCa.stderr).toContain("missing.crt");
  }, 120_000);

  it("presents --tls-cert/--tls-key to a server that requires mutual TLS", async () => {
    const env = { RUNNERLINE_SERVER: `127.0.0.1:${mutual.grpcPort}`, RUNNERLINE_TLS_CA: certs.ca.certPath };
    const [withCert, viaEnv, without, halfPair] = await Promise.all([
      cli(["summary", "--tls-cert", certs.client.certPath, "--tls-key", certs.client.keyPath], env),
      cli(["summary"], { ...env, RUNNERLINE_TLS_CLIENT_CERT: certs.client.certPath, RUNNERLINE_TLS_CLIENT_KEY: certs.client.keyPath }),
      cli(["summary"], env),
      cli(["summary", "--tls-cert", certs.client.certPath], env),
    ]);
    expect(withCert).toMatchObject({ code: 0, stderr: "" });
    expect(withCert.stdout).toMatch(/^workers\s+0 /m);
    expect(viaEnv).toMatchObject({ code: 0, stderr: "" });
    expect(without.code).toBe(2);
    expect(without.stderr).toMatch(/^runnerline: [A-Z_]+: /);
    expect(halfPair).toMatchObject({ code: 1, stderr: "runnerline: --tls-cert and --tls-key go together\n" });
  }, 120_000);
});
