import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Command } from "commander";
import { type Rollout, RolloutSchema, RolloutStatus } from "../../gen/runnerline/v1/rollout_pb.js";
import { connect, EXIT, type GlobalOptions, usageDuration } from "./connection.js";
import { jsonText, printJson, printTable, progressBar, RESULT_CELL, status, truncate } from "./output.js";

type Globals = (command: Command) => GlobalOptions;

const TERMINAL = new Set([RolloutStatus.SUCCEEDED, RolloutStatus.FAILED, RolloutStatus.CANCELLED]);
/** Rollouts named one by one in the "did not succeed" line; the rest are counted. */
const NAMED_FAILURES = 20;

/**
 * `rollouts wait ID…`: waits (with a progress bar on a terminal) until every
 * rollout is SUCCEEDED, FAILED or CANCELLED, then prints each one's status and
 * result (cut to fit the table; whole with --json). Exit 4 when any ended
 * FAILED or CANCELLED, naming them on stderr; otherwise 3 when --timeout
 * passed first.
 */
export function waitCommand(globals: Globals): Command {
  return new Command("wait")
    .description("wait until rollouts finish (progress bar), print their results; exit 4 if any ended FAILED or CANCELLED, 3 if --timeout passes first")
    .argument("<ID...>", "rollout ids")
    .option("--timeout <DURATION>", "give up after this long, e.g. 10m (default: wait forever)")
    .action(async (ids: string[], options: { timeout?: string }, command: Command) => {
      const global = globals(command);
      const clients = connect(global);
      const deadline = options.timeout === undefined ? Infinity : Date.now() + usageDuration("--timeout", options.timeout);
      const finished = new Map<string, Rollout>();
      const bar = progressBar("finished", ids.length);
      try {
        while (finished.size < ids.length && Date.now() < deadline) {
          const pending = ids.filter((id) => !finished.has(id));
          const slice = Math.max(0, Math.min(1_000, deadline - Date.now()));
          const { rollouts: done } = await clients.rollouts.waitRollouts({ rolloutIds: pending, timeout: durationFromMs(slice) });
          for (const rollout of done) if (TERMINAL.has(rollout.status)) finished.set(rollout.rolloutId, rollout);
          bar?.update(finished.size);
        }
      } finally {
        bar?.stop();
      }
      const results = ids.map((id) => finished.get(id));
      if (global.json) {
        for (const rollout of results) if (rollout !== undefined) printJson(RolloutSchema, rollout);
      } else {
        printWaited(ids, results, global.wide);
      }
      const unsuccessful = results.filter((r): r is Rollout => r !== undefined && r.status !== RolloutStatus.SUCCEEDED);
      if (unsuccessful.length > 0) {
        process.stderr.write(`runnerline: ${unsuccessfulLine(unsuccessful)}\n`);
        process.exitCode = EXIT.unsuccessful;
      } else if (finished.size < ids.length) {
        process.exitCode = EXIT.incomplete;
      }
    });
}

/** One row per id (its status and result, or its failure), then the counts by status. */
function printWaited(ids: string[], results: (Rollout | undefined)[], wide: boolean) {
  const cell = wide ? RESULT_CELL.wide : RESULT_CELL.narrow;
  printTable(
    ["ROLLOUT", "STATUS", "RESULT", "FAILURE"],
    ids.map((id, i) => {
      const rollout = results[i];
      if (rollout === undefined) return [id, "UNFINISHED", "-", "-"];
      return [id, status(RolloutStatus[rollout.status]), jsonText(rollout.result, cell), rollout.failureReason ? truncate(rollout.failureReason, cell) : "-"];
    }),
  );
  const counts = new Map<string, number>();
  for (const rollout of results) {
    const name = rollout === undefined ? "UNFINISHED" : (RolloutStatus[rollout.status] ?? "?");
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  const summary = [...counts].map(([name, count]) => `${count} ${status(name)}`).join(", ");
  const done = results.filter((r) => r !== undefined).length;
  process.stdout.write(`${done}/${ids.length} finished: ${summary}\n`);
}

/** "2 rollouts did not succeed: b-2 FAILED (boom), c-9 CANCELLED" (the first 20 named). */
function unsuccessfulLine(rollouts: Rollout[]): string {
  const named = rollouts.slice(0, NAMED_FAILURES).map((r) => {
    const reason = r.failureReason ? ` (${truncate(r.failureReason, 80)})` : "";
    return `${r.rolloutId} ${RolloutStatus[r.status]}${reason}`;
  });
  const more = rollouts.length > NAMED_FAILURES ? ` and ${rollouts.length - NAMED_FAILURES} more` : "";
  const noun = rollouts.length === 1 ? "rollout" : "rollouts";
  return `${rollouts.length} ${noun} did not succeed: ${named.join(", ")}${more}`;
}
