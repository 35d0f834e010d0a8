import { Command } from "commander";
import { GetFleetSummaryResponseSchema } from "../../gen/runnerline/v1/worker_pb.js";
import { connect, type GlobalOptions } from "./connection.js";
import { printFields, printJson, relativeTime } from "./output.js";

type Globals = (command: Command) => GlobalOptions;

export function summaryCommand(globals: Globals): Command {
  return new Command("summary").description("the fleet at a glance: workers, capacity, rollouts, queue").action(async (_options: unknown, command: Command) => {
    const global = globals(command);
    const response = await connect(global).workers.getFleetSummary({});
    if (global.json) return printJson(GetFleetSummaryResponseSchema, response);
    const s = response.summary;
    if (s === undefined) return;
    const w = s.workers;
    const r = s.rollouts;
    const age = s.oldestQueuedAge === undefined ? "-" : relativeTime(Number(s.oldestQueuedAge.seconds) * 1000 + s.oldestQueuedAge.nanos / 1e6).replace(" ago", "");
    printFields([
      ["workers", `${w?.total ?? 0} (${w?.idle ?? 0} idle, ${w?.busy ?? 0} busy, ${w?.unknown ?? 0} unknown, ${w?.offline ?? 0} offline)`],
      ["connected", String(w?.connected ?? 0)],
      ["quarantined", String(w?.quarantined ?? 0)],
      ["capacity", `${s.usedCapacity}/${s.totalCapacity} in use`],
      ["queue", `${s.queueDepth} waiting, oldest ${age}`],
      ["unroutable", String(s.unroutableQueued)],
      [
        "rollouts",
        `${r?.total ?? 0} (${r?.queuing ?? 0} queuing, ${r?.requeuing ?? 0} requeuing, ${r?.preparing ?? 0} preparing, ${r?.running ?? 0} running, ` +
          `${r?.succeeded ?? 0} succeeded, ${r?.failed ?? 0} failed, ${r?.cancelled ?? 0} cancelled)`,
      ],
    ]);
  });
}
