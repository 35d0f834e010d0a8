/**
 * A runner's worker id against a real server: two runners with one id do not
 * fight (the newer session wins and the older runner stops with
 * SessionReplacedError), a runner that replaced its own half-open session
 * resumes, the id defaults to the host name, and connection failures are
 * logged without grpc-js's empty "Resolution note: ".
 */
import { once } from "node:events";
import net from "node:net";
import { hostname } from "node:os";
import { create } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Runner, SessionReplacedError, workerIdFromHostname } from "../../src/client/runner.js";
import type { RunnerJob, RunnerLogger, RunnerOptions } from "../../src/client/runner.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import type { Welcome } from "../../src/gen/runnerline/v1/runner_pb.js";
import { SystemSnapshotSchema } from "../../src/gen/runnerline/v1/telemetry_pb.js";
import { TcpRelay, enqueue, eventually, silentLogger, startTestServer } from "./helpers.js";
import type { TestServer } from "./helpers.js";

let server: TestServer;
const runners: Runner[] = [];

beforeEach(async () => {
  server = await startTestServer();
});

afterEach(async () => {
  await Promise.all(runners.splice(0).map((runner) => runner.stop()));
  await server.close();
});

function newRunner(options: Partial<RunnerOptions> = {}): Runner {
  const runner = new Runner({
    address: server.grpcAddress,
    workerId: `worker-${Math.random().toString(36).slice(2, 8)}`,
    logger: silentLogger,
    collectSnapshot: async () => create(SystemSnapshotSchema, { hostname: "test-host" }),
    // Quick reconnects: a runner that fought for its id would open many sessions within the test.
    reconnect: { initialDelayMs: 20, maxDelayMs: 50 },
    ...options,
  });
  runners.push(runner);
  return runner;
}

async function replacedCount(): Promise<number> {
  const text = await (await fetch(`${server.httpBaseUrl}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("runnerline_sessions_replaced_total "));
  if (line === undefined) throw new Error("runnerline_sessions_replaced_total is not in /metrics");
  return Number(line.split(" ")[1]);
}

/** `promise`, or a rejection naming `what` after `ms`. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("two runners with one worker id", () => {
  it("the second start makes the first stop with SessionReplacedError naming the id, and they do not fight", async () => {
    let sessions = 0;
    const first = newRunner({ workerId: "gpu-host-7" });
    first.on("connected", () => sessions++);
    let firstJob: RunnerJob | undefined;
    const firstRun = first.run(async (job) => {
      firstJob = job;
      await once(job.signal, "abort");
      throw job.signal.reason;
    });
    await once(first, "connected");
    const held = await enqueue(server.clients, { held: true });
    await eventually(async () => firstJob, (job) => job !== undefined);

    const second = newRunner({ workerId: "gpu-host-7" });
    second.on("connected", () => sessions++);
    const secondRun = second.run(async () => ({ by: "second" }));

    const error = await within(firstRun.then(() => undefined, (e: unknown) => e), 10_000, "the first runner's stop");
    expect(error).toBeInstanceOf(SessionReplacedError);
    expect(error).toMatchObject({ workerId: "gpu-host-7" });
    expect((error as Error).message).toContain("worker id gpu-host-7");
    expect((error as SessionReplacedError).newPeer).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(first.status.state).toBe("stopped");
    // Its job was aborted with the same error: its attempt is no longer its to report.
    expect(firstJob!.signal.reason).toBe(error);

    // No storm: a while later the second still holds the worker, and only the two sessions were ever opened.
    await sleep(500);
    expect(second.status.connected).toBe(true);
    expect(sessions).toBe(2);
    expect(await replacedCount()).toBe(1);
    // The second runner serves the worker: the held rollout's retry and new work go to it.
    const next = await enqueue(server.clients, { next: true });
    await eventually(() => server.clients.rollouts.getRollout({ rolloutId: next.rolloutId }), (r) => r.rollout?.status === RolloutStatus.SUCCEEDED);
    expect((await server.clients.workers.getWorker({ workerId: "gpu-host-7" })).worker?.connected).toBe(true);
    void held;
    await second.stop({ drain: true });
    await secondRun;
  });

  it("a runner that reconnects after a half-open connection replaces its own session and resumes its attempt", async () => {
    const relay = await new TcpRelay({ host: "127.0.0.1", port: Number(server.grpcAddress.split(":")[1]) }).start();
    try {
      const runner = newRunner({ address: relay.address });
      const nextJob = runner.assignments().next();
      const rollout = await enqueue(server.clients, {});
      const job = (await nextJob).value as RunnerJob;
      await once(runner, "heartbeatAck");

      // The runner's side of its connection fails; the server's stays open, so its session is still live there.
      const reconnected = once(runner, "connected") as Promise<[Welcome]>;
      relay.cutClientsOnly();
      const [welcome] = await within(reconnected, 10_000, "the reconnect");
      expect(welcome.resumedAttemptIds).toEqual([job.attempt.attemptId]);
      // The server did replace the older session (it was still open), and the runner went on.
      expect(await replacedCount()).toBe(1);
      expect(runner.status.state).toBe("running");

      job.succeed({ resumed: true });
      await eventually(() => server.clients.rollouts.getRollout({ rolloutId: rollout.rolloutId }), (r) => r.rollout?.status === RolloutStatus.SUCCEEDED);
    } finally {
      await relay.close();
    }
  });
});

describe("the worker id", () => {
  it("defaults to the host name", async () => {
    const runner = newRunner({ workerId: undefined });
    expect(runner.workerId).toBe(workerIdFromHostname());
    expect(workerIdFromHostname()).toBe(hostname().replace(/[^A-Za-z0-9._:-]/g, "-").slice(0, 128));
    runner.start();
    await once(runner, "connected");
    expect((await server.clients.workers.getWorker({ workerId: workerIdFromHostname() })).worker?.connected).toBe(true);
  });

  it("is derived from any host name as a valid worker id", () => {
    expect(workerIdFromHostname("gpu host/7")).toBe("gpu-host-7");
    expect(workerIdFromHostname("node-3.cluster.local")).toBe("node-3.cluster.local");
    expect(workerIdFromHostname("h".repeat(200))).toHaveLength(128);
    expect(workerIdFromHostname("")).toBe("runner");
  });
});

describe("connection failures in the log", () => {
  it("do not end with an empty 'Resolution note: '", async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));

    const lines: string[] = [];
    const logger: RunnerLogger = { debug() {}, info: (l) => lines.push(l), warn: (l) => lines.push(l), error: (l) => lines.push(l) };
    const runner = newRunner({ address: `127.0.0.1:${port}`, logger });
    runner.start();
    const failures = await eventually(async () => lines.filter((l) => l.includes("could not open a session")), (l) => l.length >= 2);
    for (const line of failures) {
      expect(line).toMatch(/ECONNREFUSED/);
      expect(line).not.toMatch(/Resolution note:\s*$/);
    }
  });
});
