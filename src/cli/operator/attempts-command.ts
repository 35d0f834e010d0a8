import { Command } from "commander";
import { type Attempt, AttemptSchema, AttemptStatus } from "../../gen/runnerline/v1/attempt_pb.js";
import { connect, type GlobalOptions, UsageError } from "./connection.js";
import { addListOptions, collectPages, type ListOptions, noteTruncated, orderBy, parseLimit, parseStatuses } from "./list-options.js";
import { printJson, printTable, status, truncate, when } from "./output.js";

type Globals = (command: Command) => GlobalOptions;

export function attemptsCommand(globals: Globals): Command {
  const attempts = new Command("attempts").description("list attempts of a rollout or a worker");
  addListOptions(attempts.command("list").description("list attempts (--rollout ID or --worker ID, or a --filter)"), "create_time:desc")
    .option("--rollout <ID>", "attempts of this rollout")
    .option("--worker <ID>", "attempts handed to this worker")
    .action(async (options: ListOptions & { rollout?: string; worker?: string }, command: Command) => {
      const global = globals(command);
      if (options.rollout === undefined && options.worker === undefined && options.filter === undefined) {
        throw new UsageError("give --rollout ID, --worker ID or --filter EXPR");
      }
      const clients = connect(global);
      const statuses = parseStatuses<AttemptStatus>(options.status, AttemptStatus, "attempt");
      const { items, total } = await collectPages(parseLimit(options.limit), async (pageSize, pageToken) => {
        const page = await clients.attempts.listAttempts({
          rolloutId: options.rollout ?? "",
          workerId: options.worker ?? "",
          statuses,
          filter: options.filter ?? "",
          orderBy: orderBy(options.sort),
          pageSize,
          pageToken,
        });
        return { items: page.attempts, nextPageToken: page.nextPageToken, totalSize: page.totalSize };
      });
      if (global.json) {
        for (const attempt of items) printJson(AttemptSchema, attempt);
        return;
      }
      printAttemptTable(items, global.wide);
      noteTruncated(items.length, total);
    });
  return attempts;
}

export function printAttemptTable(attempts: Attempt[], wide: boolean) {
  const head = ["ATTEMPT", "ROLLOUT", "#", "WORKER", "STATUS", "STARTED", "ENDED", "ERROR"];
  if (wide) head.push("LAST SIGN OF LIFE", "LATE STATUS");
  printTable(
    head,
    attempts.map((a) => {
      const row = [
        a.attemptId,
        a.rolloutId,
        String(a.sequenceId),
        a.workerId,
        status(AttemptStatus[a.status]),
        when(a.startTime ?? a.createTime, wide),
        when(a.endTime, wide),
        a.error?.message ? truncate(a.error.message, wide ? 200 : 40) : "-",
      ];
      if (wide) row.push(when(a.lastHeartbeatTime, wide), a.lateStatus ? AttemptStatus[a.lateStatus]! : "-");
      return row;
    }),
  );
}
