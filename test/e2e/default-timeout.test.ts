import { durationFromMs, durationMs } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseServeArgs } from "../../src/cli/serve-command.js";
import { createRunnerlineClients, type RunnerlineClients } from "../../src/client/clients.js";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { DEFAULT_TIMEOUT_MS } from "../../src/server/config.js";
import { eventually } from "../polling.js";
import { type ScriptedRunner, startScriptedRunner } from "./scripted-runner.js";

/**
 * A rollout enqueued without config.timeout gets the server's default, so an
 * attempt whose runner keeps it alive (heartbeats listing it) but never ends
 * it is still ended TIMEOUT; an explicit timeout, and an explicit 0s (no
 * limit), are kept.
 */
let server: RunningServer;
let clients: RunnerlineClients;
let runner: ScriptedRunner;
const DEFAULT_MS = 1_500;

beforeAll(async () => {
  // A long grace: only a timeout can end the silent attempts below within the test.
  server = await startServer({
    grpcAddress: "127.0.0.1:0",
    httpAddress: "127.0.0.1:0",
    store: "memory",
    heartbeatIntervalMs: 20_000,
    defaultTimeoutMs: DEFAULT_MS,
    log: () => {},
  });
  clients = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${server.grpcPort}` });
  runner = await startScriptedRunner(`127.0.0.1:${server.grpcPort}`, "holder", { capacity: 3 });
});

afterAll(async () => {
  runner?.drop();
  await server?.close();
});

describe("the default attempt timeout", () => {
  it("is written into a rollout enqueued without one, and ends its stuck attempt TIMEOUT", async () => {
    const { rollout } = await clients.rollouts.enqueueRollout({ rolloutId: "no-timeout", input: { kind: { case: "structValue", value: { fields: { outcome: { kind: { case: "stringValue", value: "silent" } } } } } } });
    expect(durationMs(rollout!.config!.timeout!)).toBe(DEFAULT_MS);
    const { rollouts } = await clients.rollouts.waitRollouts({ rolloutIds: ["no-timeout"], timeout: durationFromMs(15_000) });
    expect(rollouts.map((r) => [r.rolloutId, r.status])).toEqual([["no-timeout", RolloutStatus.FAILED]]);
    const { attempts } = await clients.attempts.listAttempts({ rolloutId: "no-timeout" });
    expect(attempts.map((a) => a.status)).toEqual([AttemptStatus.TIMEOUT]);
    expect(attempts[0]!.error?.message).toBe(`ran longer than the rollout's timeout of ${DEFAULT_MS} ms`);
  }, 30_000);

  it("leaves an explicit timeout, and an explicit 0s (no limit), as they are", async () => {
    const silent = { kind: { case: "structValue" as const, value: { fields: { outcome: { kind: { case: "stringValue" as const, value: "silent" } } } } } };
    const { rollouts } = await clients.rollouts.enqueueRollouts({
      requests: [
        { rolloutId: "own-timeout", input: silent, config: { timeout: durationFromMs(600_000), maxAttempts: 2 } },
        { rolloutId: "no-limit", input: silent, config: { timeout: durationFromMs(0) } },
      ],
    });
    expect(rollouts.map((r) => durationMs(r.config!.timeout!))).toEqual([600_000, 0]);
    // Both are held past the default timeout, and neither has ended.
    await eventually(() => clients.attempts.listAttempts({ workerId: "holder", statuses: [AttemptStatus.PREPARING, AttemptStatus.RUNNING] }), (page) => page.attempts.length === 2);
    await new Promise((resolve) => setTimeout(resolve, 2 * DEFAULT_MS));
    const { rollouts: after } = await clients.rollouts.waitRollouts({ rolloutIds: ["own-timeout", "no-limit"], timeout: durationFromMs(0) });
    expect(after).toEqual([]);
  }, 30_000);

  it("is 1 h unless --default-timeout / RUNNERLINE_DEFAULT_TIMEOUT says otherwise; 0 turns it off", () => {
    expect(DEFAULT_TIMEOUT_MS).toBe(3_600_000);
    expect(parseServeArgs(["--default-timeout", "2h"], {}).defaultTimeoutMs).toBe(7_200_000);
    expect(parseServeArgs([], { RUNNERLINE_DEFAULT_TIMEOUT: "90s" }).defaultTimeoutMs).toBe(90_000);
    expect(parseServeArgs(["--default-timeout", "0"], {}).defaultTimeoutMs).toBe(0);
    expect(() => parseServeArgs(["--default-timeout", "soon"], {})).toThrow(/--default-timeout must be a positive duration/);
  });
});
