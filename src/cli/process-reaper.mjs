// The process reaper: ends the process groups of a runner's attempts when the
// runner dies, even by SIGKILL (Node has no PR_SET_PDEATHSIG).
//
//   node process-reaper.mjs
//
// One per runner, started once, in a session of its own (so Ctrl-C and
// hang-ups aimed at the runner do not reach it). The runner writes "+PGID\n"
// when an attempt's command starts in a new process group and "-PGID\n" once
// that group is gone. When the runner's end of stdin closes — the runner
// exited, however — every group still registered gets SIGKILL, and the reaper
// exits. Plain JavaScript with only Node's own modules: no TypeScript loader
// to start.
import { createInterface } from "node:readline";

const groups = new Set();
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(signal, () => {});

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const pgid = Number(line.slice(1));
  if (!Number.isInteger(pgid) || pgid <= 1) return;
  if (line.startsWith("+")) groups.add(pgid);
  else if (line.startsWith("-")) groups.delete(pgid);
});
lines.on("close", () => {
  for (const pgid of groups) {
    try {
      process.kill(-pgid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
  process.exit(0);
});
