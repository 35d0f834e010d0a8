/**
 * Crash test (issue 3): a real server process on a SQLite file, driven by
 * enqueuers and runner sessions, killed with SIGKILL at random moments and
 * restarted on the same file. Whatever was acknowledged must be there, once,
 * and every rollout must end within its retry policy. It runs on the server's
 * default SQLite settings (synchronous=NORMAL), the ones docs/storage.md makes
 * its promise about.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { afterAll, expect, it } from "vitest";
import { createRunnerlineClients } from "../src/client/clients.js";
import { Runner, type RunnerLogger } from "../src/client/runner.js";
import { type Attempt, AttemptStatus } from "../src/gen/runnerline/v1/attempt_pb.js";
import { EnqueueRolloutRequestSchema, type Rollout, RolloutStatus } from "../src/gen/runnerline/v1/rollout_pb.js";
import { SystemSnapshotSchema } from "../src/gen/runnerline/v1/telemetry_pb.js";
import { isRolloutTerminal } from "../src/server/domain/rollout.js";
import { tempDatabasePath } from "./harness.js";
import { freePort } from "./polling.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const ROLLOUTS = 300;
const BATCH = 10;
const RUNNERS = 4;
const KILLS = 6;
const MAX_ATTEMPTS = 5;
const HEARTBEAT_S = 0.25;

const quiet: RunnerLogger = { debug() {}, info() {}, warn() {}, error() {} };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const between = (low: number, high: number) => low + Math.random() * (high - low);

let server: ChildProcess | undefined;
const runners: Runner[] = [];
/** The SQLite setting each start-up line named, e.g. "synchronous=NORMAL". */
const settingsServed = new Set<string>();

/** Starts `runnerline serve` (node itself, so that SIGKILL hits the server) and waits until it listens. */
async function startServer(path: string, port: number): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      `${root}src/cli/main.ts`,
      "serve",
      "--store",
      `sqlite:${path}`,
      "--grpc-addr",
      `127.0.0.1:${port}`,
      "--http-addr",
      "127.0.0.1:0",
      "--heartbeat-interval",
      String(HEARTBEAT_S),
    ],
    // The defaults, whatever the environment of the test says.
    { cwd: root, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUNNERLINE_STORE: "", RUNNERLINE_SQLITE_SYNCHRONOUS: "" } },
  );
  let output = "";
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes("serving")) {
        settingsServed.add(/synchronous=\w+/.exec(output)?.[0] ?? "no synchronous setting named");
        resolve();
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code) => reject(new Error(`server exited with ${code} before listening:\n${output}`)));
  });
  child.removeAllListeners("exit");
  return child;
}

afterAll(async () => {
  await Promise.all(runners.map((runner) => runner.stop()));
  server?.kill("SIGKILL");
});

it("SIGKILL at random moments loses and duplicates nothing", async () => {
  const path = tempDatabasePath("crash.db");
  const port = await freePort();
  const clients = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${port}` });
  server = await startServer(path, port);

  // Runners: each attempt takes a little while; one in ten fails (and is retried).
  let handled = 0;
  const runs: Promise<void>[] = [];
  for (let i = 0; i < RUNNERS; i++) {
    const runner = new Runner({
      address: `127.0.0.1:${port}`,
      workerId: `crash-runner-${i}`,
      capacity: 2,
      reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
      collectSnapshot: async () => create(SystemSnapshotSchema),
      logger: quiet,
    });
    runners.push(runner);
    runs.push(
      runner.run(async () => {
        await sleep(between(50, 400));
        handled++;
        if (Math.random() < 0.1) throw new Error("flaky rollout");
        return { by: runner.workerId };
      }),
    );
  }

  // Enqueuer: client-chosen ids, so a batch whose answer was lost in a crash is resent safely.
  const acknowledged = new Set<string>();
  let enqueueFailures = 0;
  const enqueuing = (async () => {
    for (let start = 0; start < ROLLOUTS; start += BATCH) {
      const ids = Array.from({ length: Math.min(BATCH, ROLLOUTS - start) }, (_, k) => `crash-${start + k}`);
      const requests = ids.map((rolloutId) =>
        create(EnqueueRolloutRequestSchema, {
          rolloutId,
          input: { kind: { case: "stringValue", value: rolloutId } },
          config: {
            maxAttempts: MAX_ATTEMPTS,
            retryOn: [AttemptStatus.FAILED, AttemptStatus.UNRESPONSIVE, AttemptStatus.TIMEOUT],
            unresponsiveTimeout: durationFromMs(2_000),
          },
        }),
      );
      for (;;) {
        try {
          const { rollouts } = await clients.rollouts.enqueueRollouts({ requests }, { timeoutMs: 2_000 });
          expect(rollouts.map((r) => r.rolloutId)).toEqual(ids);
          for (const id of ids) acknowledged.add(id);
          break;
        } catch {
          enqueueFailures++;
          await sleep(100);
        }
      }
      await sleep(between(0, 150));
    }
  })();

  // The crashes: SIGKILL mid-flight, restart on the same file at once.
  const killedAt: string[] = [];
  for (let k = 0; k < KILLS; k++) {
    await sleep(between(300, 1_200));
    const held = runners.reduce((n, runner) => n + runner.status.heldAttemptIds.length, 0);
    killedAt.push(`${acknowledged.size} enqueued/${held} running`);
    server.kill("SIGKILL");
    await once(server, "exit");
    server = await startServer(path, port);
  }
  await enqueuing;

  // Let the fleet finish everything.
  const deadline = Date.now() + 60_000;
  let rollouts: Rollout[] = [];
  for (;;) {
    const page = await clients.rollouts.listRollouts({ pageSize: 1_000 });
    rollouts = page.rollouts;
    if (rollouts.length >= ROLLOUTS && rollouts.every((r) => isRolloutTerminal(r.status))) break;
    if (Date.now() > deadline) break;
    await sleep(200);
  }
  const attempts: Attempt[] = [];
  let pageToken = "";
  do {
    const page = await clients.attempts.listAttempts({ pageSize: 1_000, pageToken });
    attempts.push(...page.attempts);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  await Promise.all(runners.map((runner) => runner.stop()));
  await Promise.all(runs);

  const ids = rollouts.map((r) => r.rolloutId);
  const byStatus = (status: RolloutStatus) => rollouts.filter((r) => r.status === status).length;
  const attemptsByRollout = new Map<string, Attempt[]>();
  for (const attempt of attempts) {
    attemptsByRollout.set(attempt.rolloutId, [...(attemptsByRollout.get(attempt.rolloutId) ?? []), attempt]);
  }
  const attemptCounts: Record<string, number> = {};
  for (const attempt of attempts) {
    const name = AttemptStatus[attempt.status];
    attemptCounts[name] = (attemptCounts[name] ?? 0) + 1;
  }
  console.log(
    [
      `crash test on SQLite, ${[...settingsServed].join(" / ")}: ${KILLS} SIGKILLs (at each: ${killedAt.join(", ")}), ` +
        `${enqueueFailures} enqueue calls failed and were resent`,
      `  rollouts: ${acknowledged.size} acknowledged, ${rollouts.length} stored, ${new Set(ids).size} distinct; ` +
        `SUCCEEDED ${byStatus(RolloutStatus.SUCCEEDED)}, FAILED ${byStatus(RolloutStatus.FAILED)}, ` +
        `not terminal ${rollouts.filter((r) => !isRolloutTerminal(r.status)).length}`,
      `  attempts: ${attempts.length} (${Object.entries(attemptCounts).map(([s, n]) => `${s} ${n}`).join(", ")}), ` +
        `${attempts.filter((a) => a.lateStatus !== AttemptStatus.UNSPECIFIED).length} late reports recorded; handler runs ${handled}`,
    ].join("\n"),
  );

  // Nothing acknowledged is lost; nothing is there twice or unasked for.
  expect(acknowledged.size).toBe(ROLLOUTS);
  expect(new Set(ids).size).toBe(ids.length);
  expect(new Set(ids)).toEqual(acknowledged);
  for (const rollout of rollouts) {
    const own = attemptsByRollout.get(rollout.rolloutId) ?? [];
    const succeeded = own.filter((a) => a.status === AttemptStatus.SUCCEEDED);
    // Ends terminal, within its retry policy, with at most one success counted.
    expect(isRolloutTerminal(rollout.status), `${rollout.rolloutId} is ${RolloutStatus[rollout.status]}`).toBe(true);
    expect(rollout.attemptCount).toBeLessThanOrEqual(MAX_ATTEMPTS);
    expect(own).toHaveLength(rollout.attemptCount);
    expect(new Set(own.map((a) => a.sequenceId)).size).toBe(own.length);
    expect(succeeded.length).toBeLessThanOrEqual(1);
    if (rollout.status === RolloutStatus.SUCCEEDED) {
      expect(succeeded.map((a) => a.attemptId)).toEqual([rollout.latestAttemptId]);
    }
  }
}, 120_000);
