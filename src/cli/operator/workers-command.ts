import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Command } from "commander";
import { type Worker, WorkerSchema, WorkerStatus, WatchWorkersResponseSchema } from "../../gen/runnerline/v1/worker_pb.js";
import { connect, type GlobalOptions, UsageError } from "./connection.js";
import { addListOptions, collectPages, type ListOptions, noteTruncated, orderBy, parseLimit, parseStatuses } from "./list-options.js";
import { labelsText, printFields, printJson, printTable, status, when } from "./output.js";

type Globals = (command: Command) => GlobalOptions;

export function workersCommand(globals: Globals): Command {
  const workers = new Command("workers").description("list, inspect, watch, cordon, drain and remove workers (runners)");

  addListOptions(workers.command("list").description("list workers"), "last_heartbeat_time:desc")
    .option("--label <KEY=VALUE...>", "only workers with this label (repeatable)")
    .action(async (options: ListOptions & { label?: string[] }, command: Command) => {
      const global = globals(command);
      const clients = connect(global);
      const labels = parseLabels(options.label ?? []);
      const statuses = parseStatuses<WorkerStatus>(options.status, WorkerStatus, "worker");
      const { items, total } = await collectPages(parseLimit(options.limit), async (pageSize, pageToken) => {
        const page = await clients.workers.listWorkers({ statuses, labels, filter: options.filter ?? "", orderBy: orderBy(options.sort), pageSize, pageToken });
        return { items: page.workers, nextPageToken: page.nextPageToken, totalSize: page.totalSize };
      });
      if (global.json) {
        for (const worker of items) printJson(WorkerSchema, worker);
        return;
      }
      printWorkerTable(items, global.wide);
      noteTruncated(items.length, total);
    });

  workers
    .command("get")
    .description("show one worker")
    .argument("<ID>", "worker id")
    .action(async (id: string, _options: unknown, command: Command) => {
      const global = globals(command);
      const { worker } = await connect(global).workers.getWorker({ workerId: id });
      if (worker === undefined) return;
      if (global.json) return printJson(WorkerSchema, worker);
      const snapshot = worker.snapshot;
      printFields([
        ["worker", worker.workerId],
        // Why the server set the status itself, when it did (e.g. a silent worker forgotten after --forget-after).
        ["status", status(WorkerStatus[worker.status]) + (worker.statusReason === "" ? "" : ` (${worker.statusReason})`)],
        ["connected", worker.connected ? "yes" : "no"],
        ["capacity", `${worker.currentAttemptIds.length}/${worker.capacity} in use`],
        ["attempts", worker.currentAttemptIds.join(", ") || "-"],
        ["labels", labelsText(worker.labels)],
        ["peer", worker.peer || "-"],
        ["version", worker.clientVersion || "-"],
        ["last heartbeat", when(worker.lastHeartbeatTime, global.wide)],
        ["connected since", when(worker.connectTime, global.wide)],
        ["disconnected", when(worker.disconnectTime, global.wide)],
        ["last busy", when(worker.lastBusyTime, global.wide)],
        ["last idle", when(worker.lastIdleTime, global.wide)],
        ["created", when(worker.createTime, global.wide)],
        ["quarantine", quarantineText(worker, true)],
        ["cordon", cordonText(worker, true)],
        ["host", snapshot?.hostname || "-"],
        ["cpu", snapshot?.cpu === undefined ? "-" : `${snapshot.cpu.usagePercent.toFixed(0)} %`],
        ["memory", snapshot?.memory === undefined || snapshot.memory.totalBytes === 0n ? "-" : `${((Number(snapshot.memory.usedBytes) / Number(snapshot.memory.totalBytes)) * 100).toFixed(0)} %`],
      ]);
    });

  workers
    .command("watch")
    .description("follow workers live: a table that redraws on a terminal, one line per change otherwise")
    .option("--status <LIST>", "only these statuses, comma-separated")
    .option("--filter <EXPR>", "filter expression (see docs/operators.md)")
    .action(async (options: { status?: string; filter?: string }, command: Command) => {
      const global = globals(command);
      const statuses = parseStatuses<WorkerStatus>(options.status, WorkerStatus, "worker");
      const abort = new AbortController();
      process.once("SIGINT", () => abort.abort());
      const stream = connect(global).workers.watchWorkers({ statuses, filter: options.filter ?? "" }, { signal: abort.signal });
      const live = process.stdout.isTTY === true && !global.json;
      const shown = new Map<string, Worker>();
      let redraw: NodeJS.Timeout | undefined;
      const draw = () => {
        redraw = undefined;
        process.stdout.write("\x1b[2J\x1b[H");
        printWorkerTable([...shown.values()].sort((a, b) => a.workerId.localeCompare(b.workerId)), global.wide);
      };
      try {
        for await (const message of stream) {
          const worker = message.worker;
          if (worker === undefined) continue;
          if (global.json) {
            printJson(WatchWorkersResponseSchema, message);
          } else if (live) {
            shown.set(worker.workerId, worker);
            redraw ??= setTimeout(draw, 100);
          } else {
            process.stdout.write(`${changeLine(worker, message.initial)}\n`);
          }
        }
      } catch (error) {
        if (!abort.signal.aborted) throw error;
      } finally {
        clearTimeout(redraw);
      }
    });

  workers
    .command("release")
    .description("lift a worker's quarantine now: it may take work again")
    .argument("<ID>", "worker id")
    .action(async (id: string, _options: unknown, command: Command) => {
      const global = globals(command);
      const { worker } = await connect(global).workers.releaseWorker({ workerId: id });
      if (global.json) {
        if (worker !== undefined) printJson(WorkerSchema, worker);
        return;
      }
      process.stdout.write(`released ${id}${worker === undefined ? "" : ` (${WorkerStatus[worker.status]})`}\n`);
    });

  for (const [name, description] of [
    ["cordon", "keep a worker from new work (maintenance); the attempts it holds go on"],
    ["drain", "cordon a worker and ask its runner to finish the attempts it holds and exit"],
  ] as const) {
    workers
      .command(name)
      .description(description)
      .argument("<ID>", "worker id")
      .option("--reason <TEXT>", "why, shown to other operators (at most 1024 characters)", "")
      .action(async (id: string, options: { reason: string }, command: Command) => {
        const global = globals(command);
        const clients = connect(global).workers;
        const request = { workerId: id, reason: options.reason };
        const { worker } = await (name === "cordon" ? clients.cordonWorker(request) : clients.drainWorker(request));
        printCordonResult(global.json, name === "cordon" ? "cordoned" : "draining", id, worker);
      });
  }

  workers
    .command("uncordon")
    .description("let a cordoned (or drained) worker take work again")
    .argument("<ID>", "worker id")
    .action(async (id: string, _options: unknown, command: Command) => {
      const global = globals(command);
      const { worker } = await connect(global).workers.uncordonWorker({ workerId: id });
      printCordonResult(global.json, "uncordoned", id, worker);
    });

  workers
    .command("delete")
    .description("remove an OFFLINE or UNKNOWN worker without a session (its attempts' history stays)")
    .argument("<ID>", "worker id")
    .action(async (id: string, _options: unknown, command: Command) => {
      const global = globals(command);
      await connect(global).workers.deleteWorker({ workerId: id });
      if (global.json) process.stdout.write(`${JSON.stringify({ workerId: id, deleted: true })}\n`);
      else process.stdout.write(`deleted ${id}\n`);
    });

  return workers;
}

function printCordonResult(json: boolean, what: string, id: string, worker: Worker | undefined) {
  if (json) {
    if (worker !== undefined) printJson(WorkerSchema, worker);
    return;
  }
  process.stdout.write(`${what} ${id}${worker === undefined ? "" : ` (${WorkerStatus[worker.status]}${heldText(worker)})`}\n`);
}

/** ", holds 2 attempts" while it still runs work, so an operator knows a drain is not over yet. */
function heldText(worker: Worker): string {
  const held = worker.currentAttemptIds.length;
  return held === 0 ? "" : `, holds ${held} attempt${held === 1 ? "" : "s"}`;
}

/** "CORDONED" or "DRAINING" after the status, or nothing. */
function cordonBadge(worker: Worker): string {
  return worker.draining ? ` ${status("DRAINING")}` : worker.cordoned ? ` ${status("CORDONED")}` : "";
}

/** "since 2026-… by ops: disk swap", or "-" when not cordoned. */
function cordonText(worker: Worker, wide: boolean): string {
  if (!worker.cordoned) return "-";
  const by = worker.cordonedBy === "" ? "" : ` by ${worker.cordonedBy}`;
  const reason = worker.cordonReason === "" ? "" : `: ${worker.cordonReason}`;
  return `${worker.draining ? "draining, " : ""}since ${when(worker.cordonTime, wide)}${by}${reason}`;
}

function printWorkerTable(workers: Worker[], wide: boolean) {
  const head = ["WORKER", "STATUS", "CONN", "USED", "LABELS", "LAST HEARTBEAT"];
  if (wide) head.push("PEER", "VERSION", "CONNECTED SINCE", "QUARANTINE");
  printTable(
    head,
    workers.map((w) => {
      const row = [
        w.workerId,
        (isQuarantined(w) ? `${status(WorkerStatus[w.status])} ${status("QUARANTINED")}` : status(WorkerStatus[w.status])) +
          cordonBadge(w),
        w.connected ? "yes" : "no",
        `${w.currentAttemptIds.length}/${w.capacity}`,
        labelsText(w.labels),
        when(w.lastHeartbeatTime, wide),
      ];
      if (wide) row.push(w.peer || "-", w.clientVersion || "-", when(w.connectTime, wide), quarantineText(w, wide));
      return row;
    }),
  );
}

/** Kept from new work now: quarantine_until is set and still ahead. */
function isQuarantined(worker: Worker, now = Date.now()): boolean {
  return worker.quarantineUntil !== undefined && timestampMs(worker.quarantineUntil) > now;
}

/** "until 2026-… (in 29 s): 3 failed or timed-out attempts in a row", or "-" when not quarantined. */
function quarantineText(worker: Worker, wide: boolean): string {
  if (!isQuarantined(worker)) return "-";
  const reason = worker.quarantineReason === "" ? "" : `: ${worker.quarantineReason}`;
  return `until ${when(worker.quarantineUntil, wide)}${reason}`;
}

/** One change, for logs and pipes: time, worker, status, what it holds, a quarantine. */
function changeLine(worker: Worker, initial: boolean): string {
  const held = worker.currentAttemptIds.length === 0 ? "" : ` attempts=${worker.currentAttemptIds.join(",")}`;
  const quarantine = isQuarantined(worker) ? ` quarantined_until=${new Date(timestampMs(worker.quarantineUntil!)).toISOString()}` : "";
  const cordon = worker.draining ? " draining" : worker.cordoned ? " cordoned" : "";
  return `${new Date().toISOString()} ${worker.workerId} ${WorkerStatus[worker.status]} connected=${worker.connected}${held}${quarantine}${cordon}${initial ? " (initial)" : ""}`;
}

export function parseLabels(pairs: string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const pair of pairs) {
    const at = pair.indexOf("=");
    if (at <= 0) throw new UsageError(`--label expects KEY=VALUE, not "${pair}"`);
    labels[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return labels;
}
