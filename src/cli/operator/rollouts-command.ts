import { readFileSync } from "node:fs";
import { create, fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import { durationFromMs, ValueSchema } from "@bufbuild/protobuf/wkt";
import { Command } from "commander";
import { AttemptSchema, AttemptStatus } from "../../gen/runnerline/v1/attempt_pb.js";
import {
  type EnqueueRolloutRequest,
  EnqueueRolloutRequestSchema,
  type Rollout,
  type RolloutConfig,
  RolloutConfigSchema,
  RolloutMode,
  RolloutSchema,
  RolloutStatus,
} from "../../gen/runnerline/v1/rollout_pb.js";
import { parseLabels } from "./workers-command.js";
import { printAttemptTable } from "./attempts-command.js";
import { connect, EXIT, type GlobalOptions, reportError, UsageError, usageDuration } from "./connection.js";
import { addListOptions, collectPages, type ListOptions, noteTruncated, orderBy, parseLimit, parseStatuses } from "./list-options.js";
import { jsonText, printFields, printJson, printTable, progressBar, RESULT_CELL, status, when } from "./output.js";
import { waitCommand } from "./rollouts-wait.js";

type Globals = (command: Command) => GlobalOptions;

/** Rollouts per EnqueueRollouts call in a batch enqueue. */
const ENQUEUE_BATCH = 500;

interface EnqueueOptions {
  input?: string;
  file?: string;
  id?: string;
  mode?: string;
  maxAttempts?: string;
  retryOn?: string;
  timeout?: string;
  label?: string[];
  priority?: string;
  retryDelay?: string;
  retryBackoff?: string;
  maxRetryDelay?: string;
}

export function rolloutsCommand(globals: Globals): Command {
  const rollouts = new Command("rollouts").description("enqueue, list, inspect, cancel and wait for rollouts");

  rollouts
    .command("enqueue")
    .description("enqueue one rollout (--input) or many (--file, one JSON request per line); prints the ids")
    .option("--input <JSON|@FILE>", "the rollout's input as JSON, or @path to read it from a file")
    .option("--file <PATH>", "JSON lines: each an EnqueueRolloutRequest ({\"input\": …, \"config\": …}); flags fill what a line leaves unset")
    .option("--id <ID>", "rollout id (an idempotency key); only with --input")
    .option("--mode <MODE>", "train, val or test")
    .option("--max-attempts <N>", "attempts before the rollout fails")
    .option("--retry-on <LIST>", "attempt outcomes that are retried: failed,timeout,unresponsive")
    .option("--timeout <DURATION>", "per-attempt timeout, e.g. 30s, 5m")
    .option("--label <KEY=VALUE...>", "only workers with this label may run it (repeatable)")
    .option("--priority <N>", "dispatch order: higher first (default 0)")
    .option("--retry-delay <DURATION>", "wait before the first retry, e.g. 2s")
    .option("--retry-backoff <FACTOR>", "each further retry waits this many times longer (≥ 1; default 2.0)")
    .option("--max-retry-delay <DURATION>", "longest wait between attempts, e.g. 1m")
    .action(async (options: EnqueueOptions, command: Command) => {
      const global = globals(command);
      if ((options.input === undefined) === (options.file === undefined)) throw new UsageError("give exactly one of --input and --file");
      if (options.id !== undefined && options.file !== undefined) throw new UsageError("--id applies to --input only");
      const defaults = enqueueDefaults(options);
      const clients = connect(global);
      if (options.input !== undefined) {
        const request = create(EnqueueRolloutRequestSchema, { ...defaults, rolloutId: options.id ?? "", input: fromJson(ValueSchema, readInput(options.input)) });
        const { rollout } = await clients.rollouts.enqueueRollout(request);
        if (rollout !== undefined) printEnqueued(rollout, global.json);
        return;
      }
      const requests = readRequestFile(options.file!, defaults);
      const bar = progressBar("enqueued", requests.length);
      try {
        for (let start = 0; start < requests.length; start += ENQUEUE_BATCH) {
          const { rollouts: added } = await clients.rollouts.enqueueRollouts({ requests: requests.slice(start, start + ENQUEUE_BATCH) });
          for (const rollout of added) printEnqueued(rollout, global.json);
          bar?.increment(added.length);
        }
      } finally {
        bar?.stop();
      }
    });

  addListOptions(rollouts.command("list").description("list rollouts"), "create_time:desc")
    .action(async (options: ListOptions, command: Command) => {
      const global = globals(command);
      const clients = connect(global);
      const statuses = parseStatuses<RolloutStatus>(options.status, RolloutStatus, "rollout");
      const { items, total } = await collectPages(parseLimit(options.limit), async (pageSize, pageToken) => {
        const page = await clients.rollouts.listRollouts({ statuses, filter: options.filter ?? "", orderBy: orderBy(options.sort), pageSize, pageToken });
        return { items: page.rollouts, nextPageToken: page.nextPageToken, totalSize: page.totalSize };
      });
      if (global.json) {
        for (const rollout of items) printJson(RolloutSchema, rollout);
        return;
      }
      printRolloutTable(items, global.wide);
      noteTruncated(items.length, total);
    });

  rollouts
    .command("get")
    .description("show one rollout with its attempts")
    .argument("<ID>", "rollout id")
    .action(async (id: string, _options: unknown, command: Command) => {
      const global = globals(command);
      const clients = connect(global);
      const { rollout } = await clients.rollouts.getRollout({ rolloutId: id });
      if (rollout === undefined) return;
      const attempts = await collectPages(Number.MAX_SAFE_INTEGER, async (pageSize, pageToken) => {
        const page = await clients.attempts.listAttempts({ rolloutId: id, orderBy: "sequence_id", pageSize, pageToken });
        return { items: page.attempts, nextPageToken: page.nextPageToken, totalSize: page.totalSize };
      });
      if (global.json) {
        // One object: the rollout, with its attempts alongside.
        const json = { ...(toJson(RolloutSchema, rollout) as object), attempts: attempts.items.map((a) => toJson(AttemptSchema, a)) };
        process.stdout.write(`${JSON.stringify(json)}\n`);
        return;
      }
      printFields([
        ["rollout", rollout.rolloutId],
        ["status", status(RolloutStatus[rollout.status])],
        ["mode", RolloutMode[rollout.mode] ?? "-"],
        ["attempts", `${rollout.attemptCount}${rollout.config?.maxAttempts ? ` of ${rollout.config.maxAttempts}` : ""}`],
        ["failure", rollout.failureReason || "-"],
        // Whole: a result is at most 64 KiB, and it is what the caller came for.
        ["result", jsonText(rollout.result)],
        ["input", JSON.stringify(rollout.input === undefined ? null : toJson(ValueSchema, rollout.input))],
        ["created", when(rollout.createTime, global.wide)],
        ["started", when(rollout.startTime, global.wide)],
        ["ended", when(rollout.endTime, global.wide)],
      ]);
      process.stdout.write("\n");
      printAttemptTable(attempts.items, global.wide);
    });

  rollouts
    .command("cancel")
    .description("cancel rollouts (each is tried; exit 2 if any could not be cancelled)")
    .argument("<ID...>", "rollout ids")
    .action(async (ids: string[], _options: unknown, command: Command) => {
      const global = globals(command);
      const clients = connect(global);
      let failed = false;
      for (const id of ids) {
        try {
          const { rollout } = await clients.rollouts.cancelRollout({ rolloutId: id });
          if (rollout === undefined) continue;
          if (global.json) printJson(RolloutSchema, rollout);
          else process.stdout.write(`${id} ${status(RolloutStatus[rollout.status])}\n`);
        } catch (error) {
          failed = true;
          reportError(error, `cannot cancel ${id}: `);
        }
      }
      if (failed) process.exitCode = EXIT.server;
    });

  rollouts.addCommand(waitCommand(globals));

  return rollouts;
}

function printRolloutTable(rollouts: Rollout[], wide: boolean) {
  const head = ["ROLLOUT", "STATUS", "ATTEMPTS", "CREATED", "ENDED", "RESULT"];
  if (wide) head.push("MODE", "LATEST ATTEMPT", "FAILURE");
  const cell = wide ? RESULT_CELL.wide : RESULT_CELL.narrow;
  printTable(
    head,
    rollouts.map((r) => {
      const row = [r.rolloutId, status(RolloutStatus[r.status]), String(r.attemptCount), when(r.createTime, wide), when(r.endTime, wide), jsonText(r.result, cell)];
      if (wide) row.push(RolloutMode[r.mode] ?? "-", r.latestAttemptId || "-", r.failureReason || "-");
      return row;
    }),
  );
}

function printEnqueued(rollout: Rollout, json: boolean) {
  if (json) printJson(RolloutSchema, rollout);
  else process.stdout.write(`${rollout.rolloutId}\n`);
}

/** The request fields the flags set; a --file line's own values win (its whole config, when it has one). */
type EnqueueDefaults = { mode?: RolloutMode; priority?: number; config?: RolloutConfig };

function enqueueDefaults(options: EnqueueOptions): EnqueueDefaults {
  const config = create(RolloutConfigSchema);
  let configured = false;
  if (options.maxAttempts !== undefined) {
    const n = Number(options.maxAttempts);
    if (!Number.isInteger(n) || n < 1) throw new UsageError("--max-attempts must be a positive whole number");
    config.maxAttempts = n;
    configured = true;
  }
  if (options.retryOn !== undefined) {
    config.retryOn = parseStatuses<AttemptStatus>(options.retryOn, AttemptStatus, "attempt");
    configured = true;
  }
  if (options.timeout !== undefined) {
    config.timeout = durationFromMs(usageDuration("--timeout", options.timeout));
    configured = true;
  }
  if (options.label !== undefined) {
    config.requiredLabels = parseLabels(options.label);
    configured = true;
  }
  if (options.retryDelay !== undefined) {
    config.retryDelay = durationFromMs(usageDuration("--retry-delay", options.retryDelay));
    configured = true;
  }
  if (options.retryBackoff !== undefined) {
    const factor = Number(options.retryBackoff);
    if (options.retryBackoff.trim() === "" || !Number.isFinite(factor) || factor < 1) throw new UsageError(`--retry-backoff must be a number ≥ 1, not "${options.retryBackoff}"`);
    config.retryBackoffCoefficient = factor;
    configured = true;
  }
  if (options.maxRetryDelay !== undefined) {
    config.maxRetryDelay = durationFromMs(usageDuration("--max-retry-delay", options.maxRetryDelay));
    configured = true;
  }
  const defaults: EnqueueDefaults = {};
  if (configured) defaults.config = config;
  if (options.priority !== undefined) {
    const n = Number(options.priority);
    if (options.priority.trim() === "" || !Number.isInteger(n) || Math.abs(n) > 2 ** 31 - 1) throw new UsageError(`--priority must be a whole number, not "${options.priority}"`);
    defaults.priority = n;
  }
  if (options.mode !== undefined) defaults.mode = parseStatuses<RolloutMode>(options.mode, RolloutMode, "rollout mode")[0]!;
  return defaults;
}

function readInput(text: string): JsonValue {
  const source = text.startsWith("@") ? readText(text.slice(1)) : text;
  try {
    return JSON.parse(source) as JsonValue;
  } catch (error) {
    throw new UsageError(`--input is not JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
}

function readRequestFile(path: string, defaults: EnqueueDefaults): EnqueueRolloutRequest[] {
  const lines = readText(path).split("\n");
  const requests: EnqueueRolloutRequest[] = [];
  lines.forEach((line, index) => {
    if (line.trim() === "") return;
    try {
      const request = fromJson(EnqueueRolloutRequestSchema, JSON.parse(line) as JsonValue);
      if (request.config === undefined && defaults.config !== undefined) request.config = defaults.config;
      if (request.mode === RolloutMode.UNSPECIFIED && defaults.mode !== undefined) request.mode = defaults.mode;
      if (request.priority === 0 && defaults.priority !== undefined) request.priority = defaults.priority;
      requests.push(request);
    } catch (error) {
      throw new UsageError(`${path}:${index + 1}: ${error instanceof Error ? error.message : String(error)}`);
    }
  });
  if (requests.length === 0) throw new UsageError(`${path} holds no requests`);
  return requests;
}

function readText(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    throw new UsageError(`cannot read ${path}: ${error instanceof Error ? error.message : String(error)}`);
  }
}
