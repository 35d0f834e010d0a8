import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import net from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { createRunnerlineClients } from "../../src/client/clients.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { REPEAT_WINDOW_MS } from "../../src/cli/shutdown-signals.js";
import { eventually, freePort } from "../polling.js";
import { type CliProcess, startCli, stopAll } from "./processes.js";

const root = new URL("../..", import.meta.url).pathname;
const cliProcesses: CliProcess[] = [];
const npmProcesses: ChildProcess[] = [];

afterAll(() => {
  stopAll(cliProcesses);
  for (const npm of npmProcesses) {
    try {
      process.kill(-npm.pid!, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
});

/** `npm start` as a user runs it: in a process group of its own, like a shell job. */
async function npmStart() {
  const [grpcPort, httpPort] = [await freePort(), await freePort()];
  const child = spawn(
    "npm",
    ["start", "--", "--store", "memory", "--grpc-addr", `127.0.0.1:${grpcPort}`, "--http-addr", `127.0.0.1:${httpPort}`],
    { cwd: root, stdio: ["ignore", "pipe", "pipe"], detached: true },
  );
  npmProcesses.push(child);
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = once(child, "exit").then(([code, signal]) => ({ code: code as number | null, signal: signal as string | null }));
  await eventually(async () => output, (text) => text.includes("serving gRPC"), 30_000);
  return { child, grpcPort, httpPort, output: () => output, exited };
}

const accepts = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });

describe("npm start", () => {
  it("SIGTERM to the pid npm start returned drains the server and closes its ports", async () => {
    const npm = await npmStart();
    expect(await accepts(npm.grpcPort)).toBe(true);
    npm.child.kill("SIGTERM");
    await npm.exited;
    await eventually(async () => npm.output(), (text) => text.includes("stopped"), 15_000);
    expect(npm.output()).toContain("SIGTERM: draining runners");
    expect(npm.output()).toMatch(/drain finished in \d+ ms/);
    // Nothing keeps serving behind npm's back.
    await eventually(async () => [await accepts(npm.grpcPort), await accepts(npm.httpPort)], (open) => !open[0] && !open[1], 5_000);
  }, 60_000);

  it("Ctrl-C (SIGINT to the whole job) drains once, although npm forwards it a second time", async () => {
    const npm = await npmStart();
    process.kill(-npm.child.pid!, "SIGINT");
    await npm.exited;
    await eventually(async () => npm.output(), (text) => text.includes("stopped"), 15_000);
    expect(npm.output()).toMatch(/drain finished in \d+ ms/);
    expect(npm.output()).not.toContain("again: stopping without finishing the drain");
    await eventually(async () => accepts(npm.grpcPort), (open) => !open, 5_000);
  }, 60_000);
});

describe("a second signal to the server", () => {
  it("logs the sessions and attempts it abandons, then exits", async () => {
    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    const server = startCli(["serve", "--grpc-addr", `127.0.0.1:${grpcPort}`, "--http-addr", `127.0.0.1:${httpPort}`, "--store", "memory"]);
    cliProcesses.push(server);
    await server.waitFor("serving gRPC");
    const runner = startCli(["runner", "--worker-id", "holder-1", "--exec", "sleep 30", "--server", `127.0.0.1:${grpcPort}`]);
    cliProcesses.push(runner);
    const clients = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${grpcPort}` });
    const { rollout } = await clients.rollouts.enqueueRollout({});
    const running = await eventually(
      () => clients.rollouts.getRollout({ rolloutId: rollout!.rolloutId }),
      (r) => r.rollout?.status === RolloutStatus.RUNNING,
      20_000,
    );

    server.child.kill("SIGINT");
    await server.waitFor("SIGINT: draining runners");
    await new Promise((resolve) => setTimeout(resolve, REPEAT_WINDOW_MS + 100));
    server.child.kill("SIGINT");
    expect(await server.exited).toBe(130);
    expect(server.output()).toMatch(/SIGINT again: stopping without finishing the drain; abandoning 1 open sessions holding 1 attempts/);
    expect(server.output()).toMatch(
      new RegExp(`abandoned session se-[0-9a-f]+ of worker holder-1 holding ${running.rollout!.latestAttemptId}`),
    );
  }, 60_000);
});
