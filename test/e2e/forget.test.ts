import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { promisify } from "node:util";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, expect, it } from "vitest";
import { createRunnerlineClients } from "../../src/client/clients.js";
import { WorkerStatus } from "../../src/gen/runnerline/v1/worker_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { parseServeArgs } from "../../src/cli/serve-command.js";
import { defaultConfig, type ServerOptions } from "../../src/server/config.js";
import { eventually } from "../polling.js";
import { connectDriver } from "./drivers.js";

let server: RunningServer | undefined;
const dirs: string[] = [];

afterEach(async () => {
  await server?.close();
  server = undefined;
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

async function start(options: ServerOptions) {
  server = await startServer({ grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", log: () => {}, ...options });
  const address = `127.0.0.1:${server.grpcPort}`;
  return { address, clients: createRunnerlineClients({ baseUrl: `http://${address}` }), driver: connectDriver(address) };
}

/** A runner that says Hello and then vanishes without Goodbye (kill -9): its worker is UNKNOWN. */
async function vanish(driver: ReturnType<typeof connectDriver>, workerId: string, take?: string) {
  const session = driver.session();
  session.send({ kind: "hello", workerId });
  await session.nextOf("welcome");
  if (take !== undefined) {
    session.send({ kind: "ready", slots: 1 });
    await session.nextOf("assignment");
  }
  session.close();
}

// Issue 18 §4: a runner killed with -9 stayed UNKNOWN for good (retention removes only OFFLINE workers).
it("an UNKNOWN runner with no attempts, silent for --forget-after, turns OFFLINE with a reason, and retention removes it", async () => {
  const { clients, driver } = await start({ store: "memory", forgetAfterMs: 1_000, retentionPeriodMs: 100, retainMs: 3_000 });
  await clients.rollouts.enqueueRollout({ rolloutId: "held" });
  await vanish(driver, "holding", "held");
  await vanish(driver, "gone");
  await eventually(
    () => clients.workers.getWorker({ workerId: "gone" }),
    ({ worker }) => worker!.status === WorkerStatus.UNKNOWN,
    10_000,
  );
  const { worker } = await eventually(
    () => clients.workers.getWorker({ workerId: "gone" }),
    ({ worker }) => worker!.status === WorkerStatus.OFFLINE,
    10_000,
  );
  expect(worker!.statusReason).toMatch(/^forgotten: UNKNOWN with no attempts and silent for \d+ s \(--forget-after 1 s\)/);
  // The operator's CLI says why, too.
  const shown = await promisify(execFile)(process.execPath, ["bin/runnerline.mjs", "--server", `127.0.0.1:${server!.grpcPort}`, "workers", "get", "gone"]);
  expect(shown.stdout).toMatch(/status +OFFLINE \(forgotten: UNKNOWN with no attempts/);
  // One that still holds an attempt waits for the attempt's own verdict first.
  const { worker: holding } = await clients.workers.getWorker({ workerId: "holding" });
  expect(WorkerStatus[holding!.status]).toBe("UNKNOWN");
  expect(holding!.currentRolloutIds).toEqual(["held"]);
  // Retention takes it from there (--retain after it was last heard from).
  await eventually(
    () => clients.workers.listWorkers({ pageSize: 100 }),
    (page) => !page.workers.some((w) => w.workerId === "gone"),
    10_000,
  );
}, 30_000);

it("is judged from stored timestamps: a runner lost before a restart is forgotten by the next server on the same store", async () => {
  const dir = mkdtempSync(join(tmpdir(), "runnerline-forget-"));
  dirs.push(dir);
  const store = `sqlite:${join(dir, "runnerline.db")}`;
  const first = await start({ store, drainTimeoutMs: 100 });
  await vanish(first.driver, "killed");
  await eventually(
    () => first.clients.workers.getWorker({ workerId: "killed" }),
    ({ worker }) => worker!.status === WorkerStatus.UNKNOWN,
    10_000,
  );
  await server!.close();
  const second = await start({ store, forgetAfterMs: 500, retentionPeriodMs: 100 });
  const { worker } = await eventually(
    () => second.clients.workers.getWorker({ workerId: "killed" }),
    ({ worker }) => worker!.status === WorkerStatus.OFFLINE,
    10_000,
  );
  expect(worker!.statusReason).toMatch(/^forgotten: /);
  expect(worker!.connected).toBe(false);
}, 30_000);

it("--forget-after and RUNNERLINE_FORGET_AFTER take durations; the flag wins; the default is an hour", () => {
  expect(parseServeArgs([], {}).forgetAfterMs).toBeUndefined();
  expect(defaultConfig().forgetAfterMs).toBe(3_600_000);
  expect(parseServeArgs([], { RUNNERLINE_FORGET_AFTER: "30m" }).forgetAfterMs).toBe(1_800_000);
  expect(parseServeArgs(["--forget-after", "2h"], { RUNNERLINE_FORGET_AFTER: "30m" }).forgetAfterMs).toBe(7_200_000);
  expect(parseServeArgs([], { RUNNERLINE_QUARANTINE_MAX_PERCENT: "25" }).quarantineMaxPercent).toBe(25);
  expect(defaultConfig().quarantineMaxPercent).toBe(10);
});
