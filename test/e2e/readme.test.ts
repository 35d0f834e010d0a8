import { type ChildProcess, execFile, spawn } from "node:child_process";
import { promisify } from "node:util";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type RunningServer, startServer } from "../../src/server/app.js";

/**
 * Runs the README's quickstart exactly as printed: its runner command and its
 * curl commands, against a server on the default addresses. (grpcurl is not
 * installable on this machine; reflection is covered by the transport tests.)
 */
const root = new URL("../..", import.meta.url).pathname;
const readme = readFileSync(`${root}/README.md`, "utf8");
const quickstart = readme.slice(readme.indexOf("## Quickstart"), readme.indexOf("\n## ", readme.indexOf("## Quickstart") + 1));
const shellBlocks = [...quickstart.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!.replace(/^ {3}/gm, "").trim());
const runnerCommand = shellBlocks.find((block) => block.startsWith("./bin/runnerline.mjs runner"))!;
const curlBlocks = shellBlocks.filter((block) => block.startsWith("curl "));

let server: RunningServer;
let runner: ChildProcess;

beforeAll(async () => {
  server = await startServer({ store: "memory", log: () => {} });
  runner = spawn("bash", ["-c", `exec ${runnerCommand}`], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
});

afterAll(async () => {
  runner.kill("SIGTERM");
  await new Promise((resolve) => runner.once("exit", resolve));
  await server.close();
});

it("the README prints a runner command and four curl commands", () => {
  expect(runnerCommand).toContain("--worker-id laptop-1");
  expect(curlBlocks).toHaveLength(4);
});

it("the quickstart's curl commands work as printed", async () => {
  // Asynchronously: the server answering these runs in this same process.
  const run = async (block: string) => JSON.parse((await promisify(execFile)("bash", ["-c", block], { cwd: root })).stdout);
  const [enqueue, wait, getWorker, listAttempts] = curlBlocks;

  const enqueued = await run(enqueue!);
  expect(enqueued.rollout).toMatchObject({ rolloutId: "quickstart-1", status: "ROLLOUT_STATUS_QUEUING" });

  const waited = await run(wait!);
  expect(waited.rollouts).toEqual([expect.objectContaining({ rolloutId: "quickstart-1", status: "ROLLOUT_STATUS_SUCCEEDED" })]);

  const { worker } = await run(getWorker!);
  expect(worker).toMatchObject({ workerId: "laptop-1", status: "WORKER_STATUS_IDLE", connected: true });
  expect(worker.lastBusyTime).toBeDefined();
  expect(worker.lastIdleTime).toBeDefined();

  const { attempts } = await run(listAttempts!);
  expect(attempts).toEqual([expect.objectContaining({ status: "ATTEMPT_STATUS_SUCCEEDED", workerId: "laptop-1" })]);

  // Repeating the enqueue is idempotent.
  expect((await run(enqueue!)).rollout.status).toBe("ROLLOUT_STATUS_SUCCEEDED");
}, 30_000);
