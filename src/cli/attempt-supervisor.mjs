// The attempt supervisor: sits between a runner and the command it runs for
// one attempt, so that the command — and everything it started — never
// outlives the runner, even a SIGKILLed one (Node has no PR_SET_PDEATHSIG).
//
//   node attempt-supervisor.mjs COMMAND
//
// The runner starts it as the leader of a new process group, with a pipe on
// fd 3 that the runner never writes to nor closes. The command runs in the
// same group with the supervisor's stdin, stdout and stderr. When fd 3 reaches
// end-of-file the runner is gone, and the supervisor SIGKILLs the whole group,
// itself included. Signals the runner sends to the group (a cancel) reach the
// command directly; the supervisor ignores them and leaves when the command
// does, with the command's exit status.
//
// Plain JavaScript, no imports beyond Node's: it starts in tens of
// milliseconds, once per attempt, without a TypeScript loader.
import { spawn } from "node:child_process";
import net from "node:net";

const command = process.argv[2];
if (command === undefined) {
  process.stderr.write("usage: attempt-supervisor.mjs COMMAND (with a lifeline pipe on fd 3)\n");
  process.exit(2);
}

const forwarded = ["SIGTERM", "SIGINT", "SIGHUP"];
for (const signal of forwarded) process.on(signal, () => {});

let commandExited = false;
const lifeline = new net.Socket({ fd: 3, readable: true, writable: false });
lifeline.on("data", () => {});
lifeline.on("error", () => {});
lifeline.on("close", () => {
  if (commandExited) return;
  // The runner died: take the command's whole group down with us.
  try {
    process.kill(-process.pid, "SIGKILL");
  } catch {
    process.exit(137);
  }
});

const child = spawn("/bin/sh", ["-c", command], { stdio: "inherit" });
child.on("error", (error) => {
  commandExited = true;
  process.stderr.write(`could not run /bin/sh: ${error.message}\n`);
  process.exit(127);
});
child.on("exit", (code, signal) => {
  commandExited = true;
  lifeline.destroy();
  if (signal === null) process.exit(code ?? 1);
  // Die of the same signal, so the runner reports "killed by SIGTERM".
  process.removeAllListeners(signal);
  process.kill(process.pid, signal);
});
