import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, expect, it } from "vitest";
import { createRunnerlineClients } from "../../src/client/clients.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { eventually, freePort } from "../polling.js";
import { type CliProcess, startCli, stopAll } from "./processes.js";

const processes: CliProcess[] = [];
const dataDir = mkdtempSync(join(tmpdir(), "runnerline-drain-"));

afterAll(() => {
  stopAll(processes);
  rmSync(dataDir, { recursive: true, force: true });
});

it("SIGTERM during load drains every runner, exits 0, and a restart finishes the rest with nothing lost", async () => {
  const [grpcPort, httpPort] = [await freePort(), await freePort()];
  const serve = () => {
    const server = startCli([
      "serve",
      "--grpc-addr", `127.0.0.1:${grpcPort}`,
      "--http-addr", `127.0.0.1:${httpPort}`,
      "--store", `sqlite:${dataDir}/runnerline.db`,
      "--heartbeat-interval", "0.2",
      // Generous, so a runner starved of CPU on a loaded machine is not judged silent: this test is about the drain.
      "--heartbeat-grace", "5",
      "--drain-timeout", "10",
    ]);
    processes.push(server);
    return server;
  };
  let server = serve();
  await server.waitFor("serving gRPC");
  const runners = ["r1", "r2", "r3"].map((id) => {
    const runner = startCli(["runner", "--worker-id", id, "--exec", "sleep 0.3; cat > /dev/null", "--server", `127.0.0.1:${grpcPort}`]);
    processes.push(runner);
    return runner;
  });
  const clients = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${grpcPort}` });
  const { rollouts } = await clients.rollouts.enqueueRollouts({ requests: Array.from({ length: 30 }, () => ({})) });
  const ids = rollouts.map((r) => r.rolloutId);
  const succeeded = () => clients.rollouts.listRollouts({ statuses: [RolloutStatus.SUCCEEDED], pageSize: 1000 });
  await eventually(succeeded, (page) => page.totalSize >= 5, 20_000);

  server.child.kill("SIGTERM");
  expect(await server.exited).toBe(0);
  expect(server.output()).toContain("draining runners");
  // Log lines are written asynchronously; the last one, written just before exit, is flushed too.
  expect(server.output()).toMatch(/"msg":"stopped"/);
  for (const runner of runners) await runner.waitFor(/drain/i, 5_000);

  server = serve();
  await server.waitFor("serving gRPC");
  const restarted = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${grpcPort}` });
  const done = await eventually(
    () => restarted.rollouts.listRollouts({ pageSize: 1000 }),
    (page) => page.rollouts.every((r) => r.status === RolloutStatus.SUCCEEDED),
    30_000,
  );
  expect(done.rollouts.map((r) => r.rolloutId).sort()).toEqual([...ids].sort());
  // Each ran exactly once: nothing held at shutdown was lost and retried.
  expect(done.rollouts.map((r) => r.attemptCount)).toEqual(ids.map(() => 1));
  const runnerLogs = runners.map((r) => r.output()).join("\n");
  console.log(`drained and restarted: 30 rollouts, ${done.rollouts.length} SUCCEEDED, attempts ${done.rollouts.reduce((n, r) => n + r.attemptCount, 0)}`);
  expect(runnerLogs).not.toMatch(/attempt .* failed/);
}, 90_000);
