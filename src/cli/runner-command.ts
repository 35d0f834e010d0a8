import { createRequire } from "node:module";
import { parseArgs } from "node:util";
import type { JsonValue } from "@bufbuild/protobuf";
import { AttemptCancelledError, Runner, RunnerRefusedError, SessionReplacedError, workerIdFromHostname } from "../client/runner.js";
import type { RunnerJob, RunnerLogger } from "../client/runner.js";
import { RESULT_MAX_BYTES } from "../common/attempt-result.js";
import { CLIENT_ID_PATTERN, CLIENT_ID_RULE } from "../common/client-id.js";
import { runAttemptProcess } from "./attempt-process.js";
import { RESULT_MODES, type ResultMode, resultFromStdout, stdoutBuffer, TailBuffer } from "./command-result.js";
import { CLIENT_SECURITY_OPTIONS, CLIENT_SECURITY_USAGE, type ClientSecurity, clientSecurityFromFlags, grpcCredentials } from "../client/security.js";

const usage = `usage: runnerline runner --exec "CMD" [--worker-id ID] [--server HOST:PORT] [--capacity N] [--label k=v ...]
                        [--result json|text|none] [--cancel-grace SECONDS]

Runs CMD with /bin/sh -c for every assigned rollout: the rollout's input arrives
as JSON on stdin, and RUNNERLINE_ROLLOUT_ID, RUNNERLINE_ATTEMPT_ID and
RUNNERLINE_WORKER_ID are set. Exit status 0 reports SUCCEEDED, with stdout as
the result (see --result); anything else reports FAILED with the end of stderr.
The command and everything it starts end with its attempt, and with the runner
(even a killed one). SIGTERM or SIGINT drains (finishes the attempts in hand,
then exits 0), and so does an operator's DrainWorker; a second signal aborts them, reports them FAILED and exits
130 (SIGINT) or 143 (SIGTERM). Exit code 2: bad arguments, the server refused this
runner (bad worker id, credentials or permissions), or another runner started
with the same worker id and took it over.

  --worker-id     this runner's identity, unique in the fleet: ${CLIENT_ID_RULE}
                  (default: the host name, here ${workerIdFromHostname()}; a second runner
                  with the same id replaces this one, which then exits 2)
  --server        gRPC address of the server (default 127.0.0.1:50051)
  --capacity      attempts run at once (default 1)
  --label         k=v label, repeatable
  --result        what stdout is (default json):
                    json  one JSON document, the attempt's result (empty: none);
                          anything else fails the attempt
                    text  JSON as above, otherwise the end of stdout as a string
                    none  no result; stdout passes through
                  A result is at most ${RESULT_MAX_BYTES / 1024} KiB (json: stdout over that fails the attempt).
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
  resultMode: ResultMode;
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
    stopping = runner.stop({ reason: `runner received a second signal, ${signal}` });
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);

  try {
    await runner.run((job) => runAttempt(job, config, logger));
    await stopping;
  } catch (error) {
    // Retrying would only be refused again, or take the worker id back from the runner that now holds it: say why and stop.
    if (!(error instanceof RunnerRefusedError || error instanceof SessionReplacedError)) throw error;
    process.stderr.write(`runnerline runner: ${error.message}\n`);
    return 2;
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
      result: { type: "string", default: "json" },
      help: { type: "boolean", short: "h", default: false },
      ...CLIENT_SECURITY_OPTIONS,
    },
  });
  if (values.help) return "help";
  const security = clientSecurityFromFlags(values, process.env);
  const workerId = values["worker-id"] ?? workerIdFromHostname();
  const command = values.exec;
  if (!CLIENT_ID_PATTERN.test(workerId)) throw new Error(`--worker-id must be ${CLIENT_ID_RULE}, got ${JSON.stringify(workerId)}`);
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
  const resultMode = values.result as ResultMode;
  if (!RESULT_MODES.includes(resultMode)) throw new Error(`--result must be json, text or none, got ${values.result}`);
  return { workerId, command, server: values.server, capacity, labels, cancelGraceMs: cancelGraceSeconds * 1000, resultMode, security };
}

/** Runs the command for one attempt; resolves with its result on exit status 0, rejects with the failure report otherwise. */
async function runAttempt(job: RunnerJob, config: RunnerCommandConfig, logger: RunnerLogger): Promise<JsonValue | undefined> {
  const { attemptId, rolloutId } = job.attempt;
  const started = Date.now();
  logger.info(`attempt ${attemptId} (rollout ${rolloutId}) started`);
  try {
    const result = await executeCommand(job, config);
    const size = result === undefined ? "no result" : `result of ${Buffer.byteLength(JSON.stringify(result))} bytes`;
    logger.info(`attempt ${attemptId} succeeded in ${seconds(Date.now() - started)} (${size})`);
    return result;
  } catch (error) {
    if (job.signal.reason instanceof AttemptCancelledError) {
      logger.info(`attempt ${attemptId} cancelled after ${seconds(Date.now() - started)}: ${job.signal.reason.reason}`);
    } else if (job.signal.aborted) {
      // The runner stopped without draining: it has reported the attempt FAILED itself, and says whether that got through.
      logger.info(`attempt ${attemptId} aborted after ${seconds(Date.now() - started)} (${describe(job.signal.reason)}): ${firstLine(describe(error))}`);
    } else {
      logger.info(`attempt ${attemptId} failed after ${seconds(Date.now() - started)}: ${firstLine(describe(error))}`);
    }
    throw error;
  }
}

async function executeCommand(job: RunnerJob, config: RunnerCommandConfig): Promise<JsonValue | undefined> {
  const stderrTail = new TailBuffer(stderrTailBytes);
  const stdout = stdoutBuffer(config.resultMode);
  const exit = await runAttemptProcess({
    command: config.command,
    env: {
      ...process.env,
      RUNNERLINE_ROLLOUT_ID: job.attempt.rolloutId,
      RUNNERLINE_ATTEMPT_ID: job.attempt.attemptId,
      RUNNERLINE_WORKER_ID: config.workerId,
    },
    stdin: `${JSON.stringify(job.input)}\n`,
    onStdout: stdout && ((chunk) => stdout.push(chunk)),
    onStderr: (chunk) => {
      process.stderr.write(chunk);
      stderrTail.push(chunk);
    },
    signal: job.signal,
    cancelGraceMs: config.cancelGraceMs,
  });
  if (exit.code !== 0) {
    const how = exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.code}`;
    const stderr = stderrTail.text().trim();
    throw new Error(stderr ? `${how}: ${stderr}` : `${how} (no stderr output)`);
  }
  const outcome = resultFromStdout(config.resultMode, stdout);
  if ("error" in outcome) throw new Error(outcome.error);
  return outcome.result;
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
