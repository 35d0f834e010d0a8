import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const reaperPath = fileURLToPath(new URL("./process-reaper.mjs", import.meta.url));

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
 * Runs one attempt's command in a process group of its own. The group is
 * registered with this runner's process reaper (process-reaper.mjs), which
 * kills it if the runner dies first, and is killed once the command has
 * exited, so nothing it left behind in the background outlives its attempt.
 */
export function runAttemptProcess(options: AttemptProcessOptions): Promise<AttemptProcessExit> {
  return new Promise((resolve, reject) => {
    const child = spawn("/bin/sh", ["-c", options.command], {
      stdio: ["pipe", options.onStdout ? "pipe" : "inherit", "pipe"],
      // Its own process group: Ctrl-C on the runner drains instead of killing
      // the attempts, and a cancel reaches everything the command started.
      detached: true,
      env: options.env,
    });
    const pgid = child.pid;
    // Registered in the same tick as the spawn: the runner cannot die in between without the group being known.
    if (pgid !== undefined) reaper.track(pgid);
    if (options.onStdout) child.stdout!.on("data", options.onStdout);
    child.stderr!.on("data", options.onStderr);
    // A command that never reads its input closes stdin early (EPIPE); that is its business.
    child.stdin!.on("error", () => {});
    child.stdin!.end(options.stdin);

    let killTimer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      signalGroup(pgid, "SIGTERM");
      killTimer = setTimeout(() => signalGroup(pgid, "SIGKILL"), options.cancelGraceMs);
    };
    if (options.signal.aborted) onAbort();
    else options.signal.addEventListener("abort", onAbort, { once: true });

    const settle = () => {
      clearTimeout(killTimer);
      options.signal.removeEventListener("abort", onAbort);
    };
    // Whatever the command left running in its group (a background job, or
    // something started a moment too late to receive a cancel) ends with it.
    child.on("exit", () => {
      signalGroup(pgid, "SIGKILL");
      if (pgid !== undefined) reaper.untrack(pgid);
    });
    child.on("error", (error) => {
      settle();
      if (pgid !== undefined) reaper.untrack(pgid);
      reject(new Error(`could not run /bin/sh: ${error.message}`));
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

/**
 * This runner's process reaper, started with the first attempt and restarted
 * (with every live group) should it ever die. It must never keep the runner
 * alive: its handles are unref'd.
 */
class Reaper {
  private process: ChildProcess | undefined;
  private readonly groups = new Set<number>();

  track(pgid: number): void {
    this.groups.add(pgid);
    this.send(`+${pgid}\n`);
  }

  untrack(pgid: number): void {
    if (this.groups.delete(pgid)) this.send(`-${pgid}\n`);
  }

  private send(line: string): void {
    const reaper = this.process ?? this.start();
    reaper.stdin!.write(line);
  }

  private start(): ChildProcess {
    const reaper = spawn(process.execPath, [reaperPath], { stdio: ["pipe", "ignore", "inherit"], detached: true });
    reaper.stdin!.on("error", () => {});
    reaper.once("exit", () => {
      if (this.process !== reaper) return;
      this.process = undefined;
      // Killed from outside: a new one takes over the groups still alive.
      if (this.groups.size > 0) this.send([...this.groups].map((pgid) => `+${pgid}\n`).join(""));
    });
    reaper.unref();
    (reaper.stdin as unknown as { unref?: () => void }).unref?.();
    this.process = reaper;
    return reaper;
  }
}

const reaper = new Reaper();
