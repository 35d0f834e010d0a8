import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { parseArgs } from "node:util";
import { toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { AttemptCancelledError, Runner } from "../client/runner.js";
import type { RunnerJob, RunnerLogger } from "../client/runner.js";
import { CLIENT_SECURITY_OPTIONS, CLIENT_SECURITY_USAGE, type ClientSecurity, clientSecurityFromFlags, grpcCredentials } from "../client/security.js";

const usage = `usage: runnerline runner --worker-id ID --exec "CMD" [--server HOST:PORT] [--capacity N] [--label k=v ...] [--cancel-grace SECONDS]

Runs CMD with /bin/sh -c for every assigned rollout: the rollout's input arrives
as JSON on stdin, and RUNNERLINE_ROLLOUT_ID, RUNNERLINE_ATTEMPT_ID and
RUNNERLINE_WORKER_ID are set. Exit status 0 reports SUCCEEDED; anything else
reports FAILED with the end of stderr. SIGTERM or SIGINT drains (finishes the
attempts in hand, then exits 0); a second signal aborts them.

  --server        gRPC address of the server (default 127.0.0.1:50051)
  --capacity      attempts run at once (default 1)
  --label         k=v label, repeatable
  --cancel-grace  seconds between SIGTERM and SIGKILL for a cancelled attempt (default 5)
${CLIENT_SECURITY_USAGE}`;

const stderrTailBytes = 2048;

interface RunnerCommandConfig {
  workerId: string;
  command: string;
  server: string;
  capacity: number;
  labels: Record<string, string>;
  cancelGraceMs: number;
  security: ClientSecurity;
}

/** `runnerline runner …`; resolves to the process exit code. */
export async function runnerCommand(argv: string[]): Promise<number> {
  let config: RunnerCommandConfig;
  try {
    const parsed = parseRunnerArgs(argv);
    if (parsed === "help") {
      process.stdout.write(`${usage}\n`);
      return 0;
    }
    config = parsed;
  } catch (error) {
    process.stderr.write(`runnerline runner: ${describe(error)}\n${usage}\n`);
    return 2;
  }

  const logger = cliLogger();
  const runner = new Runner({
    address: config.server,
    workerId: config.workerId,
    labels: config.labels,
    capacity: config.capacity,
    clientVersion: `runnerline-cli/${packageVersion()}`,
    token: config.security.token,
    credentials: grpcCredentials(config.security),
    logger,
  });

  let exitCode = 0;
  let stopping: Promise<void> | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (!stopping) {
      logger.info(`runner ${config.workerId}: ${signal}: draining (finishing attempts in hand; signal again to abort)`);
      stopping = runner.stop({ drain: true, reason: `runner received ${signal}` });
      return;
    }
    logger.warn(`runner ${config.workerId}: ${signal} again: aborting attempts in hand`);
    exitCode = signal === "SIGINT" ? 130 : 143;
    stopping = runner.stop({ reason: `runner received ${signal} twice` });
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);

  try {
    await runner.run((job) => runAttempt(job, config, logger));
    await stopping;
  } finally {
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
  }
  return exitCode;
}

function parseRunnerArgs(argv: string[]): RunnerCommandConfig | "help" {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      "worker-id": { type: "string" },
      exec: { type: "string" },
      server: { type: "string", default: "127.0.0.1:50051" },
      capacity: { type: "string", default: "1" },
      label: { type: "string", multiple: true, default: [] },
      "cancel-grace": { type: "string", default: "5" },
      help: { type: "boolean", short: "h", default: false },
      ...CLIENT_SECURITY_OPTIONS,
    },
  });
  if (values.help) return "help";
  const security = clientSecurityFromFlags(values, process.env);
  const workerId = values["worker-id"];
  const command = values.exec;
  if (!workerId) throw new Error("--worker-id is required");
  if (!command) throw new Error("--exec is required");

  const capacity = Number(values.capacity);
  if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`--capacity must be a positive integer, got ${values.capacity}`);
  const cancelGraceSeconds = Number(values["cancel-grace"]);
  if (!Number.isFinite(cancelGraceSeconds) || cancelGraceSeconds < 0) {
    throw new Error(`--cancel-grace must be a number of seconds, got ${values["cancel-grace"]}`);
  }

  const labels: Record<string, string> = {};
  for (const label of values.label) {
    const separator = label.indexOf("=");
    if (separator <= 0) throw new Error(`--label must look like key=value, got ${label}`);
    labels[label.slice(0, separator)] = label.slice(separator + 1);
  }
  return { workerId, command, server: values.server, capacity, labels, cancelGraceMs: cancelGraceSeconds * 1000, security };
}

/** Runs the command for one attempt; resolves on exit status 0, rejects with the failure report otherwise. */
async function runAttempt(job: RunnerJob, config: RunnerCommandConfig, logger: RunnerLogger): Promise<void> {
  const { attemptId, rolloutId } = job.attempt;
  const started = Date.now();
  logger.info(`attempt ${attemptId} (rollout ${rolloutId}) started`);
  try {
    await executeCommand(job, config);
    logger.info(`attempt ${attemptId} succeeded in ${seconds(Date.now() - started)}`);
  } catch (error) {
    if (job.signal.reason instanceof AttemptCancelledError) {
      logger.info(`attempt ${attemptId} cancelled after ${seconds(Date.now() - started)}: ${job.signal.reason.reason}`);
    } else {
      logger.info(`attempt ${attemptId} failed after ${seconds(Date.now() - started)}: ${firstLine(describe(error))}`);
    }
    throw error;
  }
}

function executeCommand(job: RunnerJob, config: RunnerCommandConfig): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("/bin/sh", ["-c", config.command], {
      stdio: ["pipe", "inherit", "pipe"],
      // Its own process group: Ctrl-C on the runner drains instead of killing
      // the attempts, and a cancel reaches everything the command started.
      detached: true,
      env: {
        ...process.env,
        RUNNERLINE_ROLLOUT_ID: job.attempt.rolloutId,
        RUNNERLINE_ATTEMPT_ID: job.attempt.attemptId,
        RUNNERLINE_WORKER_ID: config.workerId,
      },
    });

    const stderrTail = new TailBuffer(stderrTailBytes);
    child.stderr.on("data", (chunk: Buffer) => {
      process.stderr.write(chunk);
      stderrTail.push(chunk);
    });
    // A command that never reads its input closes stdin early (EPIPE); that is its business.
    child.stdin.on("error", () => {});
    const input = job.rollout.input ? toJson(ValueSchema, job.rollout.input) : null;
    child.stdin.end(`${JSON.stringify(input)}\n`);

    let killTimer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      signalGroup(child.pid, "SIGTERM");
      killTimer = setTimeout(() => signalGroup(child.pid, "SIGKILL"), config.cancelGraceMs);
    };
    if (job.signal.aborted) onAbort();
    else job.signal.addEventListener("abort", onAbort, { once: true });

    const settle = () => {
      clearTimeout(killTimer);
      job.signal.removeEventListener("abort", onAbort);
    };
    // The shell can exit on SIGTERM while something it started a moment too
    // late to receive the signal lives on; nothing of a cancelled attempt may.
    child.on("exit", () => {
      if (job.signal.aborted) signalGroup(child.pid, "SIGKILL");
    });
    child.on("error", (error) => {
      settle();
      reject(new Error(`could not run /bin/sh: ${error.message}`));
    });
    child.on("close", (code, signal) => {
      settle();
      if (code === 0) return resolve();
      const how = signal ? `killed by ${signal}` : `exit code ${code}`;
      const stderr = stderrTail.text().trim();
      reject(new Error(stderr ? `${how}: ${stderr}` : `${how} (no stderr output)`));
    });
  });
}

function signalGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // The group is already gone.
  }
}

/** Keeps the last `limit` bytes written to it. */
class TailBuffer {
  private chunks: Buffer[] = [];
  private size = 0;

  constructor(private readonly limit: number) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.chunks.length > 1 && this.size - this.chunks[0]!.length >= this.limit) {
      this.size -= this.chunks.shift()!.length;
    }
  }

  text(): string {
    const all = Buffer.concat(this.chunks);
    const tail = all.subarray(Math.max(0, all.length - this.limit));
    // Dropping a partial UTF-8 sequence at the cut keeps the message free of replacement characters.
    let start = 0;
    while (start < tail.length && start < 3 && (tail[start]! & 0xc0) === 0x80) start++;
    return (tail.length < all.length ? "…" : "") + tail.subarray(start).toString("utf8");
  }
}

function cliLogger(): RunnerLogger {
  const write = (message: string) => process.stderr.write(`${new Date().toISOString()} ${message}\n`);
  return { debug: () => {}, info: write, warn: write, error: write };
}

function packageVersion(): string {
  try {
    const require = createRequire(import.meta.url);
    return (require("../../package.json") as { version?: string }).version ?? "unknown";
  } catch {
    return "unknown";
  }
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

function firstLine(text: string): string {
  const line = text.split("\n", 1)[0] ?? "";
  return line.length < text.length ? `${line} …` : line;
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}
