import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const supervisorPath = fileURLToPath(new URL("./attempt-supervisor.mjs", import.meta.url));

export interface AttemptProcessOptions {
  /** Run with /bin/sh -c. */
  command: string;
  env: NodeJS.ProcessEnv;
  /** Written to the command's stdin, which is then closed. */
  stdin: string;
  /** Receives the command's stdout; without it, stdout passes through to the runner's. */
  onStdout?: (chunk: Buffer) => void;
  onStderr: (chunk: Buffer) => void;
  /** Aborting sends SIGTERM to everything the command started, and SIGKILL `cancelGraceMs` later. */
  signal: AbortSignal;
  cancelGraceMs: number;
}

export interface AttemptProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * Runs one attempt's command through the attempt supervisor
 * (attempt-supervisor.mjs), which ends the command's process group if this
 * process dies. The group is also killed once the command has exited, so
 * nothing it left behind in the background outlives its attempt.
 */
export function runAttemptProcess(options: AttemptProcessOptions): Promise<AttemptProcessExit> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [supervisorPath, options.command], {
      // fd 3 is the supervisor's lifeline: never written, closed by the kernel when this process dies.
      stdio: ["pipe", options.onStdout ? "pipe" : "inherit", "pipe", "pipe"],
      // Its own process group: Ctrl-C on the runner drains instead of killing
      // the attempts, and a cancel reaches everything the command started.
      detached: true,
      env: options.env,
    });
    if (options.onStdout) child.stdout!.on("data", options.onStdout);
    child.stderr!.on("data", options.onStderr);
    // A command that never reads its input closes stdin early (EPIPE); that is its business.
    child.stdin!.on("error", () => {});
    child.stdin!.end(options.stdin);
    const lifeline = child.stdio[3]!;
    lifeline.on("error", () => {});

    let killTimer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      signalGroup(child.pid, "SIGTERM");
      killTimer = setTimeout(() => signalGroup(child.pid, "SIGKILL"), options.cancelGraceMs);
    };
    if (options.signal.aborted) onAbort();
    else options.signal.addEventListener("abort", onAbort, { once: true });

    const settle = () => {
      clearTimeout(killTimer);
      options.signal.removeEventListener("abort", onAbort);
      lifeline.destroy();
    };
    // Whatever the command left running in its group (a background job, or
    // something started a moment too late to receive a cancel) ends with it.
    child.on("exit", () => signalGroup(child.pid, "SIGKILL"));
    child.on("error", (error) => {
      settle();
      reject(new Error(`could not start the attempt supervisor: ${error.message}`));
    });
    child.on("close", (code, signal) => {
      settle();
      resolve({ code, signal });
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
