import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRunnerlineClients, type RunnerlineClients } from "../../src/client/clients.js";
import { Runner } from "../../src/client/runner.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { WorkerStatus } from "../../src/gen/runnerline/v1/worker_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { msOf } from "../../src/server/domain/time.js";
import { silentLogger } from "../client/helpers.js";
import { tempDatabasePath } from "../harness.js";
import { eventually } from "../polling.js";
import { connectDriver, type Driver, type TestSession } from "./drivers.js";

let server: RunningServer;
let driver: Driver;

beforeAll(async () => {
  server = await startServer({ grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", store: "memory", log: () => {} });
  driver = connectDriver(`127.0.0.1:${server.grpcPort}`);
});

afterAll(async () => {
  driver.close();
  await server.close();
});

async function refusal(call: Promise<unknown>): Promise<ConnectError> {
  const error = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ConnectError);
  return error as ConnectError;
}

/** A runner session that has said Hello and asked for `slots` assignments (the server has recorded the ask). */
async function waitingSession(clients: RunnerlineClients, workerId: string, slots = 1): Promise<TestSession> {
  const session = driver.session();
  session.send({ kind: "hello", workerId, capacity: slots });
  await session.nextOf("welcome");
  session.send({ kind: "ready", slots });
  await eventually(() => clients.workers.getWorker({ workerId }), ({ worker }) => worker?.lastDequeueTime !== undefined);
  return session;
}

/** Goodbye, seen by the server (the heartbeat after it is answered), then the stream ends. */
async function leave(session: TestSession) {
  session.send({ kind: "goodbye" });
  session.send({ kind: "heartbeat", attemptIds: [], sequence: 99 });
  await session.nextOf("heartbeat_ack");
  session.close();
}

const transports = [
  ["gRPC", (s: RunningServer) => createRunnerlineClients({ baseUrl: `http://127.0.0.1:${s.grpcPort}` })],
  ["Connect", (s: RunningServer) => createRunnerlineClients({ baseUrl: `http://127.0.0.1:${s.httpPort}`, transport: "connect" })],
] as const;

describe.each(transports)("CordonWorker, UncordonWorker, DrainWorker over %s", (name, connect) => {
  let clients: RunnerlineClients;
  const id = (what: string) => `${name}-${what}`;
  beforeAll(() => {
    clients = connect(server);
  });

  it("a cordoned worker gets no new work, keeps what it holds, and takes work again at once when uncordoned", async () => {
    const workerId = id("cordoned");
    const session = await waitingSession(clients, workerId, 2);
    const { rollout: held } = await clients.rollouts.enqueueRollout({ rolloutId: id("held") });
    const assignment = await session.nextOf("assignment");
    expect(assignment.rolloutId).toBe(held!.rolloutId);

    const cordonedNow = async () => (await clients.workers.getFleetSummary({})).summary?.workers?.cordoned ?? 0;
    const before = await cordonedNow();
    const { worker } = await clients.workers.cordonWorker({ workerId, reason: "disk swap" });
    expect(await cordonedNow()).toBe(before + 1);
    expect(worker).toMatchObject({ cordoned: true, cordonReason: "disk swap", cordonedBy: "", draining: false, status: WorkerStatus.BUSY });
    expect(msOf(worker!.cordonTime)).toBeGreaterThan(0);

    // The session still has a credit: without the cordon the enqueue would hand this rollout over before answering.
    await clients.rollouts.enqueueRollout({ rolloutId: id("waits") });
    expect((await clients.rollouts.getRollout({ rolloutId: id("waits") })).rollout?.status).toBe(RolloutStatus.QUEUING);

    // What it holds goes on: its report is taken.
    session.send({ kind: "update", attemptId: assignment.attemptId, status: "SUCCEEDED" });
    await eventually(() => clients.rollouts.getRollout({ rolloutId: id("held") }), ({ rollout }) => rollout?.status === RolloutStatus.SUCCEEDED);
    expect((await clients.rollouts.getRollout({ rolloutId: id("waits") })).rollout?.status).toBe(RolloutStatus.QUEUING);

    // Idempotent: the first cordon's who, why and when stay.
    const again = await clients.workers.cordonWorker({ workerId, reason: "another reason" });
    expect(again.worker).toMatchObject({ cordoned: true, cordonReason: "disk swap", cordonTime: worker!.cordonTime });

    expect(await cordonedNow()).toBe(before + 1); // counted once
    const { worker: lifted } = await clients.workers.uncordonWorker({ workerId });
    expect(await cordonedNow()).toBe(before);
    expect(lifted).toMatchObject({ cordoned: false, cordonReason: "", draining: false });
    expect((await session.nextOf("assignment")).rolloutId).toBe(id("waits"));
    // Idempotent too.
    expect((await clients.workers.uncordonWorker({ workerId })).worker?.cordoned).toBe(false);
    session.close();
  });

  it("a unary worker's DequeueRollout gets nothing while it is cordoned", async () => {
    const workerId = id("unary");
    await clients.workers.sendHeartbeat({ workerId });
    await clients.workers.cordonWorker({ workerId });
    await clients.rollouts.enqueueRollout({ rolloutId: id("for-unary"), config: { requiredLabels: {} } });
    expect((await clients.rollouts.dequeueRollout({ workerId })).rollout).toBeUndefined();
    await clients.workers.uncordonWorker({ workerId });
    expect((await clients.rollouts.dequeueRollout({ workerId })).rollout?.rolloutId).toBeDefined();
  });

  it("`cordoned = true` in a ListWorkers filter", async () => {
    const workerId = id("listed");
    await clients.workers.sendHeartbeat({ workerId });
    await clients.workers.sendHeartbeat({ workerId: id("not-listed") });
    await clients.workers.cordonWorker({ workerId, reason: "listed" });
    const { workers } = await clients.workers.listWorkers({ filter: `cordoned = true AND worker_id : "${name}-"` });
    expect(workers.map((w) => w.workerId)).toEqual([workerId]);
    const others = await clients.workers.listWorkers({ filter: `cordoned = false AND worker_id : "${name}-"` });
    expect(others.workers.map((w) => w.workerId)).toContain(id("not-listed"));
    expect(others.workers.map((w) => w.workerId)).not.toContain(workerId);
  });

  it("refusals: NOT_FOUND for an unknown worker, INVALID_ARGUMENT for no id or an overlong reason", async () => {
    for (const call of [
      clients.workers.cordonWorker({ workerId: "w-nobody" }),
      clients.workers.uncordonWorker({ workerId: "w-nobody" }),
      clients.workers.drainWorker({ workerId: "w-nobody" }),
    ]) {
      const error = await refusal(call);
      expect(error.code).toBe(Code.NotFound);
      expect(error.rawMessage).toBe("worker w-nobody not found");
    }
    expect((await refusal(clients.workers.cordonWorker({}))).rawMessage).toBe("worker_id is required");
    expect((await refusal(clients.workers.uncordonWorker({}))).code).toBe(Code.InvalidArgument);
    const long = await refusal(clients.workers.drainWorker({ workerId: "w-nobody", reason: "x".repeat(1025) }));
    expect(long.code).toBe(Code.InvalidArgument);
    expect(long.rawMessage).toBe("reason is 1025 characters long; at most 1024");
  });

  it("DrainWorker: FAILED_PRECONDITION for a worker with no runner session to drain", async () => {
    const unary = id("drain-unary");
    await clients.workers.sendHeartbeat({ workerId: unary });
    const error = await refusal(clients.workers.drainWorker({ workerId: unary }));
    expect(error.code).toBe(Code.FailedPrecondition);
    expect(error.rawMessage).toMatch(/never opened a runner session.*CordonWorker keeps it from new work/);
    const left = id("drain-left");
    const session = driver.session();
    session.send({ kind: "hello", workerId: left });
    await session.nextOf("welcome");
    await leave(session);
    await eventually(() => clients.workers.getWorker({ workerId: left }), ({ worker }) => worker?.status === WorkerStatus.OFFLINE);
    expect((await refusal(clients.workers.drainWorker({ workerId: left }))).rawMessage).toMatch(/has left/);
    // Neither was cordoned by the refused call.
    expect((await clients.workers.getWorker({ workerId: unary })).worker?.cordoned).toBe(false);
  });

  it("DrainWorker: the runner hears Drain (exit), finishes what it holds, leaves; the cordon stays", async () => {
    const workerId = id("drained");
    const session = await waitingSession(clients, workerId);
    await clients.rollouts.enqueueRollout({ rolloutId: id("drain-held") });
    const assignment = await session.nextOf("assignment");
    const { worker } = await clients.workers.drainWorker({ workerId, reason: "kernel upgrade" });
    expect(worker).toMatchObject({ cordoned: true, draining: true, cordonReason: "kernel upgrade" });
    const drain = await session.nextOf("drain");
    expect(drain).toMatchObject({ exit: true, reason: "drained by an operator: kernel upgrade" });
    expect((await clients.workers.drainWorker({ workerId })).worker?.draining).toBe(true);
    session.send({ kind: "update", attemptId: assignment.attemptId, status: "SUCCEEDED" });
    await leave(session);
    const gone = await eventually(() => clients.workers.getWorker({ workerId }), ({ worker: w }) => w?.status === WorkerStatus.OFFLINE);
    expect(gone.worker).toMatchObject({ cordoned: true, draining: false, cordonReason: "kernel upgrade" });
    expect((await clients.rollouts.getRollout({ rolloutId: id("drain-held") })).rollout?.status).toBe(RolloutStatus.SUCCEEDED);
  });

  it("DrainWorker of a runner whose stream was lost: it hears Drain right after its next Welcome", async () => {
    const workerId = id("drain-lost");
    const first = driver.session();
    first.send({ kind: "hello", workerId });
    await first.nextOf("welcome");
    first.close();
    await eventually(() => clients.workers.getWorker({ workerId }), ({ worker }) => worker?.connected === false);
    await clients.workers.drainWorker({ workerId });
    const second = driver.session();
    second.send({ kind: "hello", workerId });
    await second.nextOf("welcome");
    expect(await second.nextOf("drain")).toMatchObject({ exit: true, reason: "drained by an operator" });
    second.close();
  });
});

describe("the SDK runner, drained", () => {
  it("finishes the job in hand, reports it, and run() returns; the worker is OFFLINE and still cordoned", async () => {
    const clients = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${server.grpcPort}` });
    const runner = new Runner({ address: `127.0.0.1:${server.grpcPort}`, workerId: "sdk-drained", capacity: 1, logger: silentLogger });
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let started!: () => void;
    const handlerStarted = new Promise<void>((resolve) => (started = resolve));
    const running = runner.run(async () => {
      started();
      await gate;
      return { done: true };
    });
    await clients.rollouts.enqueueRollout({ rolloutId: "sdk-drain-held" });
    await handlerStarted;
    await clients.workers.drainWorker({ workerId: "sdk-drained", reason: "maintenance" });
    // Nothing new while draining: a second rollout stays queued.
    await clients.rollouts.enqueueRollout({ rolloutId: "sdk-drain-waits" });
    release();
    await running;
    expect((await clients.rollouts.getRollout({ rolloutId: "sdk-drain-held" })).rollout).toMatchObject({
      status: RolloutStatus.SUCCEEDED,
    });
    expect((await clients.rollouts.getRollout({ rolloutId: "sdk-drain-waits" })).rollout?.status).toBe(RolloutStatus.QUEUING);
    const { worker } = await eventually(
      () => clients.workers.getWorker({ workerId: "sdk-drained" }),
      ({ worker: w }) => w?.status === WorkerStatus.OFFLINE,
    );
    expect(worker).toMatchObject({ cordoned: true, draining: false });
    await clients.rollouts.cancelRollout({ rolloutId: "sdk-drain-waits" });
  });
});

describe("on SQLite, a cordon survives a restart", () => {
  it("the worker comes back cordoned (with its reason); its new session gets no work until uncordoned", async () => {
    const path = tempDatabasePath();
    const options = { grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", store: `sqlite:${path}`, log: () => {} };
    const first = await startServer(options);
    const before = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${first.grpcPort}` });
    await before.workers.sendHeartbeat({ workerId: "w-restart" });
    await before.workers.sendHeartbeat({ workerId: "w-other" });
    await before.workers.cordonWorker({ workerId: "w-restart", reason: "bad disk" });
    await first.close();

    const second = await startServer(options);
    const restarted = connectDriver(`127.0.0.1:${second.grpcPort}`);
    try {
      const after = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${second.grpcPort}` });
      expect((await after.workers.getWorker({ workerId: "w-restart" })).worker).toMatchObject({ cordoned: true, cordonReason: "bad disk" });
      const listed = await after.workers.listWorkers({ filter: "cordoned = true" });
      expect(listed.workers.map((w) => w.workerId)).toEqual(["w-restart"]);
      const session = restarted.session();
      session.send({ kind: "hello", workerId: "w-restart" });
      await session.nextOf("welcome");
      session.send({ kind: "ready", slots: 1 });
      await eventually(() => after.workers.getWorker({ workerId: "w-restart" }), ({ worker }) => worker?.connected === true && worker.lastDequeueTime !== undefined);
      await after.rollouts.enqueueRollout({ rolloutId: "after-restart" });
      expect((await after.rollouts.getRollout({ rolloutId: "after-restart" })).rollout?.status).toBe(RolloutStatus.QUEUING);
      await after.workers.uncordonWorker({ workerId: "w-restart" });
      expect((await session.nextOf("assignment")).rolloutId).toBe("after-restart");
      session.close();
    } finally {
      restarted.close();
      await second.close();
    }
  });
});
