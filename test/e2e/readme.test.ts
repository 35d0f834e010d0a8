import { type ChildProcess, execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, expect, it } from "vitest";
import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { createRunnerlineClients } from "../../src/client/clients.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { WorkerStatus } from "../../src/gen/runnerline/v1/worker_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { eventually } from "../polling.js";

/**
 * Runs the README as printed: its quickstart runner command and curl commands,
 * and its TypeScript runner. The server listens on free ports rather than the
 * defaults the README names, so the tests pass while someone's `npm start`
 * holds 50051 and 8080: the default addresses in the commands are rewritten
 * (and each rewrite is checked to have happened). grpcurl is not installable
 * on this machine; reflection is covered by the transport tests.
 */
const root = new URL("../..", import.meta.url).pathname;
const readme = readFileSync(`${root}/README.md`, "utf8");
const section = (heading: string) => {
  const start = readme.indexOf(heading);
  return readme.slice(start, readme.indexOf("\n## ", start + 1));
};
const quickstart = section("## Quickstart");
const shellBlocks = [...quickstart.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!.replace(/^ {3}/gm, "").trim());
const runnerCommand = shellBlocks.find((block) => block.startsWith("./bin/runnerline.mjs runner"))!;
const curlBlocks = shellBlocks.filter((block) => block.startsWith("curl "));
const [typescriptRunner, typescriptTrainingLoop] = [...section("## Writing a runner in TypeScript").matchAll(/```ts\n([\s\S]*?)```/g)].map(
  (m) => m[1]!,
);

const DEFAULT_GRPC = "127.0.0.1:50051";
const DEFAULT_HTTP = "127.0.0.1:8080";

/**
 * Starts a README example (TypeScript, through tsx) from the scratch folder, pointed at the test server and at this
 * repository's `runnerline/client` source.
 */
function runExample(name: string, example: string): ChildProcess {
  let source = rewrite(example, `"${DEFAULT_GRPC}"`, `"${grpcAddress}"`);
  source = rewrite(source, `from "runnerline/client"`, `from "${root}src/client/index.js"`);
  const file = join(scratch, name);
  writeFileSync(file, source);
  // As in a project with "type": "module" (the examples use top-level await).
  writeFileSync(join(scratch, "package.json"), JSON.stringify({ type: "module" }));
  return spawn(process.execPath, ["--import", "tsx", file], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
}

/** `text` with `from` replaced by `to`; throws if `from` does not occur, so a README change cannot slip past. */
function rewrite(text: string, from: string, to: string): string {
  if (!text.includes(from)) throw new Error(`expected ${JSON.stringify(from)} in:\n${text}`);
  return text.split(from).join(to);
}

let server: RunningServer;
let grpcAddress: string;
let runner: ChildProcess;
const scratch = mkdtempSync(join(tmpdir(), "runnerline-readme-"));
const squatters: net.Server[] = [];

/** Holds `address` while the tests run if nobody does, so they prove they never need it. */
async function occupy(address: string) {
  const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.slice(address.lastIndexOf(":") + 1))];
  const squatter = net.createServer();
  const listening = await new Promise<boolean>((resolve) => {
    squatter.once("error", () => resolve(false)); // Taken already: by a README server, most likely.
    squatter.listen(port, host, () => resolve(true));
  });
  if (listening) squatters.push(squatter);
}

beforeAll(async () => {
  await occupy(DEFAULT_GRPC);
  await occupy(DEFAULT_HTTP);
  server = await startServer({ store: "memory", grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", log: () => {} });
  grpcAddress = `127.0.0.1:${server.grpcPort}`;
  // The quickstart's runner relies on the default server address; point it elsewhere with the flag.
  expect(runnerCommand).not.toContain("--server");
  runner = spawn("bash", ["-c", `exec ${runnerCommand} --server ${grpcAddress}`], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
});

afterAll(async () => {
  if (runner.exitCode === null && runner.signalCode === null) {
    runner.kill("SIGTERM");
    await once(runner, "exit");
  }
  await server.close();
  for (const squatter of squatters) squatter.close();
  rmSync(scratch, { recursive: true, force: true });
});

it("the README prints a runner command and four curl commands, all for the default addresses", () => {
  expect(runnerCommand).toContain("--worker-id laptop-1");
  expect(curlBlocks).toHaveLength(4);
  for (const block of curlBlocks) expect(block).toContain(`http://${DEFAULT_HTTP}/`);
});

it("the quickstart's curl commands work as printed", async () => {
  // Asynchronously: the server answering these runs in this same process.
  const run = async (block: string) => {
    const command = rewrite(block, DEFAULT_HTTP, `127.0.0.1:${server.httpPort}`);
    return JSON.parse((await promisify(execFile)("bash", ["-c", command], { cwd: root })).stdout);
  };
  const [enqueue, wait, getWorker, listAttempts] = curlBlocks;

  const enqueued = await run(enqueue!);
  expect(enqueued.rollout).toMatchObject({ rolloutId: "quickstart-1", status: "ROLLOUT_STATUS_QUEUING" });

  const waited = await run(wait!);
  expect(waited.rollouts).toEqual([
    expect.objectContaining({
      rolloutId: "quickstart-1",
      status: "ROLLOUT_STATUS_SUCCEEDED",
      // What the README says the result looks like.
      result: { solved: { question: "2+3" }, reward: 1 },
    }),
  ]);
  expect(quickstart).toContain('`"result": {"solved": {"question": "2+3"}, "reward": 1}`');

  const { worker } = await run(getWorker!);
  expect(worker).toMatchObject({ workerId: "laptop-1", status: "WORKER_STATUS_IDLE", connected: true });
  expect(worker.lastBusyTime).toBeDefined();
  expect(worker.lastIdleTime).toBeDefined();

  const { attempts } = await run(listAttempts!);
  expect(attempts).toEqual([expect.objectContaining({ status: "ATTEMPT_STATUS_SUCCEEDED", workerId: "laptop-1" })]);

  // Repeating the enqueue is idempotent.
  expect((await run(enqueue!)).rollout.status).toBe("ROLLOUT_STATUS_SUCCEEDED");

  // Ctrl-C on the runner drains and exits cleanly.
  runner.kill("SIGINT");
  const [code] = await once(runner, "exit");
  expect(code).toBe(0);
}, 30_000);

it("the TypeScript runner works as printed, shows input and result as described, and stops cleanly on Ctrl-C", async () => {
  // Run from a scratch folder, with the package's entry rewritten to its source here (test/package runs the packed
  // package itself from a fresh project).
  // Its worker id comes from the host name, not a constant that two copies of the example would share.
  expect(typescriptRunner).toContain("workerId: hostname()");
  const child = runExample("my-runner.ts", typescriptRunner!);
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = once(child, "exit");
  try {
    const clients = createRunnerlineClients({ baseUrl: `http://${grpcAddress}` });
    await eventually(() => clients.workers.listWorkers({}), (page) => page.workers.some((w) => w.workerId === hostname() && w.connected), 20_000);
    const { rollout } = await clients.rollouts.enqueueRollout({ input: fromJson(ValueSchema, { question: "2+3" }) });
    const { rollouts } = await clients.rollouts.waitRollouts({ rolloutIds: [rollout!.rolloutId], timeout: { seconds: 20n } });
    const http = await fetch(`http://127.0.0.1:${server.httpPort}/runnerline.v1.RolloutService/GetRollout`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ rolloutId: rollout!.rolloutId }),
    }).then((r) => r.json() as Promise<{ rollout: Record<string, unknown> }>);
    expect(rollouts[0]!.status).toBe(RolloutStatus.SUCCEEDED);
    // Exactly the JSON the README shows.
    expect(http.rollout).toMatchObject({ status: "ROLLOUT_STATUS_SUCCEEDED", result: { answer: 5, reward: 1 } });
    expect(readme).toContain('`"result": {"answer": 5, "reward": 1}`');
    const { attempt } = await clients.attempts.getAttempt({ attemptId: rollouts[0]!.latestAttemptId });
    expect(attempt!.metadata).toEqual({ model: "adder-v1" });

    child.kill("SIGINT");
    const [code] = await exited;
    expect(code, output).toBe(0);
    expect(output).toContain("runner stopped");
    // It said Goodbye: the worker is offline, not lost.
    const { worker } = await clients.workers.getWorker({ workerId: hostname() });
    expect(worker!.status).toBe(WorkerStatus.OFFLINE);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
}, 60_000);

it("the TypeScript training loop works as printed: enqueues, then prints each rollout as it finishes", async () => {
  expect(typescriptTrainingLoop).toContain('from "runnerline/client"');
  const runner = runExample("my-runner.ts", typescriptRunner!);
  const loop = runExample("my-training-loop.ts", typescriptTrainingLoop!);
  let output = "";
  loop.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  loop.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  try {
    const [code] = await once(loop, "exit");
    expect(code, output).toBe(0);
    // One line per question: id, status, reward, failure reason (empty).
    const lines = output.trim().split("\n").map((line) => line.trim().split(" "));
    expect(lines.map(([, status, reward]) => [status, reward]).sort()).toEqual([
      ["SUCCEEDED", "0"],
      ["SUCCEEDED", "1"],
      ["SUCCEEDED", "1"],
    ]);
  } finally {
    runner.kill("SIGKILL");
    if (loop.exitCode === null && loop.signalCode === null) loop.kill("SIGKILL");
  }
}, 60_000);
