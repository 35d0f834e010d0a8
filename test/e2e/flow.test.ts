import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { eventually } from "../polling.js";
import { connectDriver, type Driver, protoLoaderDriver, type TestSession } from "./drivers.js";

const HEARTBEAT_MS = 100;
const GRACE_MS = 300;

let server: RunningServer;
let address: string;

beforeAll(async () => {
  server = await startServer({
    grpcAddress: "127.0.0.1:0",
    httpAddress: "127.0.0.1:0",
    store: "memory",
    heartbeatIntervalMs: HEARTBEAT_MS,
    heartbeatGraceMs: GRACE_MS,
    log: () => {},
  });
  address = `127.0.0.1:${server.grpcPort}`;
});

afterAll(async () => {
  await server.close();
});

const drivers: [string, (address: string) => Driver][] = [
  ["Connect client", connectDriver],
  ["grpc-js client from .proto files", protoLoaderDriver],
];

describe.each(drivers)("end to end with the %s", (_, makeDriver) => {
  let driver: Driver;
  beforeAll(() => {
    driver = makeDriver(address);
  });
  afterAll(() => driver.close());

  async function join(workerId: string, runningAttemptIds?: string[]): Promise<TestSession> {
    const session = driver.session();
    session.send({ kind: "hello", workerId, runningAttemptIds });
    const welcome = await session.nextOf("welcome");
    expect(welcome.heartbeatIntervalMs).toBe(HEARTBEAT_MS);
    session.send({ kind: "heartbeat", attemptIds: [], sequence: 1 });
    expect((await session.nextOf("heartbeat_ack")).sequence).toBe(1);
    return session;
  }

  it("enqueue → assignment → RUNNING → FAILED → retry (attempt 2) → SUCCEEDED; worker IDLE → BUSY → IDLE", async () => {
    const workerId = `${driver.name.length}-flow-worker`;
    const session = await join(workerId);
    session.send({ kind: "ready", slots: 1 });
    const idle = await eventually(() => driver.worker(workerId), (w) => w.status === "IDLE");

    const rolloutId = await driver.enqueue({ task: "add", a: 2, b: 3 }, { maxAttempts: 2, retryOn: ["FAILED"] });
    const first = await session.nextOf("assignment");
    expect(first).toMatchObject({ rolloutId, sequenceId: 1, input: { task: "add", a: 2, b: 3 } });
    const busy = await driver.worker(workerId);
    expect(busy).toMatchObject({ status: "BUSY", currentAttemptIds: [first.attemptId] });
    expect(busy.lastBusyTime!).toBeGreaterThanOrEqual(idle.lastIdleTime!);

    session.send({ kind: "update", attemptId: first.attemptId, status: "RUNNING" });
    await eventually(() => driver.rolloutStatus(rolloutId), (r) => r.status === "RUNNING");
    session.send({ kind: "update", attemptId: first.attemptId, status: "FAILED", errorMessage: "flaky tool" });
    session.send({ kind: "ready", slots: 1 });

    const second = await session.nextOf("assignment");
    expect(second).toMatchObject({ rolloutId, sequenceId: 2 });
    expect(await driver.attemptStatus(first.attemptId)).toBe("FAILED");
    session.send({ kind: "update", attemptId: second.attemptId, status: "RUNNING" });
    session.send({ kind: "update", attemptId: second.attemptId, status: "SUCCEEDED" });
    await eventually(() => driver.rolloutStatus(rolloutId), (r) => r.status === "SUCCEEDED" && r.attemptCount === 2);
    const done = await driver.worker(workerId);
    expect(done).toMatchObject({ status: "IDLE", currentAttemptIds: [] });
    expect(done.lastIdleTime!).toBeGreaterThanOrEqual(done.lastBusyTime!);
    session.close();
  });

  it("a runner that stops heartbeating becomes UNKNOWN, its attempt UNRESPONSIVE, and the rollout is retried elsewhere", async () => {
    const silentId = `${driver.name.length}-silent-worker`;
    const silent = await join(silentId);
    silent.send({ kind: "ready", slots: 1 });
    await eventually(() => driver.worker(silentId), (w) => w.status === "IDLE");
    const rolloutId = await driver.enqueue("lost work", { maxAttempts: 2, retryOn: ["UNRESPONSIVE"] });
    const lost = await silent.nextOf("assignment");
    // The stream stays open, but nothing more comes from this runner.
    await eventually(() => driver.worker(silentId), (w) => w.status === "UNKNOWN", GRACE_MS * 10);
    await eventually(() => driver.attemptStatus(lost.attemptId), (s) => s === "UNRESPONSIVE", GRACE_MS * 10);
    expect((await driver.rolloutStatus(rolloutId)).status).toBe("REQUEUING");

    const rescuerId = `${driver.name.length}-rescuer`;
    const rescuer = await join(rescuerId);
    rescuer.send({ kind: "ready", slots: 1 });
    const retry = await rescuer.nextOf("assignment");
    expect(retry).toMatchObject({ rolloutId, sequenceId: 2 });
    rescuer.send({ kind: "update", attemptId: retry.attemptId, status: "SUCCEEDED" });
    await eventually(() => driver.rolloutStatus(rolloutId), (r) => r.status === "SUCCEEDED");
    silent.close();
    rescuer.close();
  });

  it("domain refusals answer Rejected and keep the stream; a missing hello ends it", async () => {
    const session = await join(`${driver.name.length}-rejects`);
    session.send({ kind: "update", attemptId: "at-does-not-exist", status: "SUCCEEDED" });
    const rejected = await session.nextOf("rejected");
    expect(rejected.code).toBe(5); // NOT_FOUND
    session.send({ kind: "heartbeat", attemptIds: [], sequence: 7 });
    expect((await session.nextOf("heartbeat_ack")).sequence).toBe(7);
    session.close();

    const rude = driver.session();
    rude.send({ kind: "ready", slots: 1 });
    await expect(rude.next()).rejects.toMatchObject({ code: 9 }); // FAILED_PRECONDITION
  });

  it("protocol violations end the stream with a clear status; bad credits are Rejected", async () => {
    const malformed = driver.session();
    malformed.send({ kind: "hello", workerId: "not a valid id!" });
    await expect(malformed.next()).rejects.toMatchObject({ code: 3 }); // INVALID_ARGUMENT

    const twice = await join(`${driver.name.length}-twice`);
    twice.send({ kind: "ready", slots: 0 });
    expect((await twice.nextOf("rejected")).code).toBe(3);
    twice.send({ kind: "hello", workerId: `${driver.name.length}-twice` });
    await expect(twice.nextOf("welcome")).rejects.toMatchObject({ code: 9 });
  });
});
