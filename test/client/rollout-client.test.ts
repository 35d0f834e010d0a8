import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { InvalidDurationError } from "../../src/client/duration.js";
import { RolloutClient, RolloutWaitTimeoutError } from "../../src/client/rollout-client.js";
import type { RolloutOutcome } from "../../src/client/rollout-json.js";
import { Runner, type RunnerJob } from "../../src/client/runner.js";
import { SystemSnapshotSchema } from "../../src/gen/runnerline/v1/telemetry_pb.js";
import { silentLogger, startTestServer, TcpRelay, type TestServer } from "./helpers.js";

// The training-loop API against a real server, with a real Runner taking the work.
let server: TestServer;
let client: RolloutClient;
const runners: Runner[] = [];
const relays: TcpRelay[] = [];

beforeEach(async () => {
  server = await startTestServer();
  client = new RolloutClient({ address: server.grpcAddress });
});

afterEach(async () => {
  await Promise.all(runners.splice(0).map((runner) => runner.stop()));
  await Promise.all(relays.splice(0).map((relay) => relay.close()));
  await server.close();
});

/** A runner whose handler is `handler`, taking up to `capacity` attempts at once. */
function startRunner(handler: (job: RunnerJob) => Promise<unknown>, capacity = 4): Runner {
  const runner = new Runner({
    address: server.grpcAddress,
    workerId: `trainer-test-${runners.length}`,
    capacity,
    logger: silentLogger,
    collectSnapshot: async () => create(SystemSnapshotSchema, { hostname: "test-host" }),
  });
  runners.push(runner);
  void runner.run(handler as never);
  return runner;
}

async function collect(iterable: AsyncIterable<RolloutOutcome>): Promise<RolloutOutcome[]> {
  const all: RolloutOutcome[] = [];
  for await (const outcome of iterable) all.push(outcome);
  return all;
}

describe("RolloutClient", () => {
  it("enqueues plain JSON and yields each result as it finishes, the fastest first", async () => {
    // Each rollout sleeps as long as its input says: finishing order is the reverse of enqueue order.
    startRunner(async (job) => {
      const { delayMs, n } = job.input as { delayMs: number; n: number };
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      if (n === 2) throw new Error("no answer for 2");
      return { answer: n * 10 };
    });
    const ids = await client.enqueueMany(
      [
        { input: { n: 1, delayMs: 1500 } },
        { input: { n: 2, delayMs: 800 } },
        { input: { n: 3, delayMs: 100 }, rolloutId: "third" },
      ],
      { config: { timeout: "30s", maxAttempts: 1 }, metadata: { step: 12 } },
    );
    expect(ids).toHaveLength(3);
    expect(ids[2]).toBe("third");
    const finished = await collect(client.wait(ids, { timeout: "20s" }));
    expect(finished.map((r) => r.rolloutId)).toEqual([ids[2], ids[1], ids[0]]);
    expect(finished[0]).toMatchObject({ status: "SUCCEEDED", succeeded: true, result: { answer: 30 }, input: { n: 3, delayMs: 100 } });
    expect(finished[0]!.metadata).toEqual({ step: 12 });
    expect(finished[1]).toMatchObject({ status: "FAILED", succeeded: false, result: undefined });
    expect(finished[1]!.failureReason).toContain("no answer for 2");
    expect(finished[2]).toMatchObject({ status: "SUCCEEDED", result: { answer: 10 } });
    // Waiting again for finished rollouts answers at once, and waitAll keeps the order asked for.
    expect((await client.waitAll(ids)).map((r) => r.rolloutId)).toEqual(ids);
  }, 40_000);

  it("run() enqueues and waits in one go; enqueue() and get() handle one rollout", async () => {
    startRunner(async (job) => ({ echo: job.input }));
    const results = await collect(client.run([{ input: "a" }, { input: "b" }], { timeout: 20_000, defaults: { priority: 1 } }));
    expect(results.map((r) => r.result).sort()).toEqual([{ echo: "a" }, { echo: "b" }].sort());
    expect(results.every((r) => r.priority === 1)).toBe(true);
    const id = await client.enqueue({ input: [1, 2, 3] });
    const [one] = await client.waitAll([id], { timeout: "20s" });
    expect(one).toMatchObject({ rolloutId: id, result: { echo: [1, 2, 3] } });
    expect(await client.get(id)).toMatchObject({ rolloutId: id, status: "SUCCEEDED" });
  }, 40_000);

  it("throws RolloutWaitTimeoutError naming the unfinished rollouts after yielding those that finished", async () => {
    startRunner(async (job) => {
      if ((job.input as { slow: boolean }).slow) await new Promise((resolve) => setTimeout(resolve, 60_000));
      return "done";
    });
    const [fast, slow] = await client.enqueueMany([{ input: { slow: false } }, { input: { slow: true } }]);
    const seen: string[] = [];
    const error = await (async () => {
      for await (const outcome of client.wait([fast!, slow!], { timeout: "1500ms" })) seen.push(outcome.rolloutId);
    })().catch((e: unknown) => e);
    expect(seen).toEqual([fast]);
    expect(error).toBeInstanceOf(RolloutWaitTimeoutError);
    expect((error as RolloutWaitTimeoutError).pendingRolloutIds).toEqual([slow]);
    expect((error as Error).message).toBe(`1 rollout(s) did not finish within 1500 ms: ${slow}`);
    // Cancelling it ends the rollout CANCELLED; a wait then yields it.
    expect((await client.cancel(slow!)).status).toBe("CANCELLED");
    expect(await client.waitAll([slow!], { timeout: 0 })).toEqual([expect.objectContaining({ status: "CANCELLED" })]);
  }, 40_000);

  it("on a timeout still yields the rollouts that finished while others held every wait slot", async () => {
    startRunner(async (job) => {
      if (job.input === "slow") await new Promise((resolve) => setTimeout(resolve, 60_000));
      return job.input;
    });
    const oneAtATime = new RolloutClient({ address: server.grpcAddress, maxConcurrentWaits: 1 });
    const [slow, fast] = await oneAtATime.enqueueMany([{ input: "slow" }, { input: "fast" }]);
    await oneAtATime.waitAll([fast!], { timeout: "20s" });
    // The slow one takes the only slot until the timeout; the finished one is asked for after it.
    const seen: string[] = [];
    const error = await (async () => {
      for await (const outcome of oneAtATime.wait([slow!, fast!], { timeout: "1s" })) seen.push(outcome.rolloutId);
    })().catch((e: unknown) => e);
    expect(seen).toEqual([fast]);
    expect((error as RolloutWaitTimeoutError).pendingRolloutIds).toEqual([slow]);
  }, 40_000);

  it("refuses bad input precisely: before sending (durations, names) or with the server's code", async () => {
    await expect(client.enqueue({ config: { timeout: "soon" } })).rejects.toThrow(InvalidDurationError);
    await expect(client.enqueueMany([{}, { config: { deadline: -1 } }])).rejects.toThrow(/^rollouts\[1\]\.config\.deadline: -1 is not a duration/);
    await expect(collect(client.wait(["x"], { timeout: "forever" }))).rejects.toThrow(/^timeout: "forever" is not a duration/);
    const invalid = await client.enqueue({ rolloutId: "has spaces" }).catch((e: unknown) => e);
    expect(invalid).toBeInstanceOf(ConnectError);
    expect((invalid as ConnectError).code).toBe(Code.InvalidArgument);
    expect((invalid as ConnectError).rawMessage).toContain("rollout_id");
    const missing = await collect(client.wait(["no-such-rollout"])).catch((e: unknown) => e);
    expect((missing as ConnectError).code).toBe(Code.NotFound);
    await expect(client.get("no-such-rollout")).rejects.toMatchObject({ code: Code.NotFound });
    // Nothing was enqueued by the refused calls.
    const { rollouts } = await server.clients.rollouts.listRollouts({});
    expect(rollouts).toEqual([]);
    expect(() => new RolloutClient({ maxConcurrentWaits: 0 })).toThrow(RangeError);
    expect(await client.enqueueMany([])).toEqual([]);
  });

  it("keeps waiting across a dropped connection, and at most maxConcurrentWaits calls wait at once", async () => {
    const relay = await new TcpRelay({ host: "127.0.0.1", port: Number(server.grpcAddress.split(":")[1]) }).start();
    relays.push(relay);
    let waiting = 0;
    let mostWaiting = 0;
    const countWaits: Interceptor = (next) => async (request) => {
      if (request.method.name !== "WaitRollouts") return next(request);
      mostWaiting = Math.max(mostWaiting, ++waiting);
      try {
        return await next(request);
      } finally {
        waiting--;
      }
    };
    const viaRelay = new RolloutClient({
      address: relay.address,
      maxConcurrentWaits: 2,
      retryUnavailableFor: "20s",
      interceptors: [countWaits],
    });
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    startRunner(async (job) => {
      await released;
      return job.input;
    });
    const ids = await viaRelay.enqueueMany([1, 2, 3, 4, 5].map((n) => ({ input: n })));
    const finished = collect(viaRelay.wait(ids, { timeout: "30s" }));
    await new Promise((resolve) => setTimeout(resolve, 300));
    relay.cut(); // the waits in flight fail UNAVAILABLE and are retried...
    await new Promise((resolve) => setTimeout(resolve, 700));
    relay.restore(); // ...until the server can be reached again
    release();
    const results = await finished;
    expect(results.map((r) => r.result).sort()).toEqual([1, 2, 3, 4, 5]);
    expect(mostWaiting).toBe(2);
  }, 40_000);

  it("a break out of the loop cancels the waits still in flight", async () => {
    startRunner(async (job) => {
      if (job.input === "slow") await new Promise((resolve) => setTimeout(resolve, 60_000));
      return job.input;
    });
    const ids = await client.enqueueMany([{ input: "fast" }, { input: "slow" }]);
    const started = Date.now();
    for await (const outcome of client.wait(ids)) {
      expect(outcome.result).toBe("fast");
      break;
    }
    expect(Date.now() - started).toBeLessThan(20_000);
  }, 30_000);
});
