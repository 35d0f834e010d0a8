/**
 * The two session options of runner.proto (Hello.terminal_update_returns_credit,
 * Hello.accepts_assignment_batches) over real sockets, with both drivers: a
 * runner that asks for neither is served exactly as before, and one that asks
 * for both gets its credits back from terminal updates (once per attempt it
 * holds, whatever the server answers) and several assignments in one message.
 */
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createRunnerlineClients, type RunnerlineClients } from "../../src/client/clients.js";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { connectDriver, type Driver, protoLoaderDriver, type Received, type TestSession } from "./drivers.js";

const INVALID_ARGUMENT = 3;
const FAILED_PRECONDITION = 9;

const drivers: [string, (address: string) => Driver][] = [
  ["Connect client", connectDriver],
  ["grpc-js client from .proto files", protoLoaderDriver],
];

describe.each(drivers)("session options with the %s", (_, makeDriver) => {
  let server: RunningServer;
  let driver: Driver;
  let clients: RunnerlineClients;
  let sequence = 0;

  // A server per test: each starts with an empty queue and no other runner to share it with.
  beforeEach(async () => {
    server = await startServer({ grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", store: "memory", log: () => {} });
    driver = makeDriver(`127.0.0.1:${server.grpcPort}`);
    clients = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${server.grpcPort}` });
  });

  afterEach(async () => {
    driver.close();
    await server.close();
  });

  async function join(workerId: string, style: "old" | "new", extra: { capacity?: number; runningAttemptIds?: string[] } = {}) {
    const session = driver.session();
    const options = style === "new" ? { terminalUpdateReturnsCredit: true, acceptsAssignmentBatches: true } : {};
    session.send({ kind: "hello", workerId, ...options, ...extra });
    const welcome = await session.nextOf("welcome");
    return { session, welcome };
  }

  /**
   * A heartbeat round trip: everything the server said in answer to what the
   * session sent before it (the server handles a session's messages in order
   * and acknowledges the heartbeat last), acks left out.
   */
  async function answers(session: TestSession): Promise<Received[]> {
    const mine = ++sequence;
    session.send({ kind: "heartbeat", attemptIds: [], sequence: mine });
    const said: Received[] = [];
    for (;;) {
      const message = await session.next();
      if (message.kind === "heartbeat_ack" && message.sequence === mine) return said;
      if (message.kind !== "heartbeat_ack") said.push(message);
    }
  }

  const kinds = (messages: Received[]) => messages.map((m) => m.kind);
  const rolloutIdsIn = (messages: Received[]) =>
    messages.flatMap((m) => (m.kind === "assignment" ? [m.rolloutId] : m.kind === "assignment_batch" ? m.assignments.map((a) => a.rolloutId) : []));

  async function enqueueEach(count: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) ids.push(await driver.enqueue({ i }));
    return ids;
  }

  it("an old-style runner is served as before: Welcome confirms nothing, single Assignments, a credit only from Ready", async () => {
    const { session, welcome } = await join("old-style", "old", { capacity: 3 });
    expect(welcome).toMatchObject({ terminalUpdateReturnsCredit: false, assignmentBatches: false });
    const queued = await enqueueEach(3);

    session.send({ kind: "ready", slots: 3 });
    const assigned = await answers(session);
    expect(kinds(assigned)).toEqual(["assignment", "assignment", "assignment"]);
    expect(rolloutIdsIn(assigned)).toEqual(queued);

    const [next] = await enqueueEach(1);
    const first = assigned[0] as Extract<Received, { kind: "assignment" }>;
    session.send({ kind: "update", attemptId: first.attemptId, status: "SUCCEEDED" });
    expect(await answers(session)).toEqual([]);
    session.send({ kind: "ready", slots: 1 });
    expect(rolloutIdsIn(await answers(session))).toEqual([next]);
    session.close();
  });

  it("a new-style runner gets a credit back from each first terminal update, never from a repeat or a RUNNING update", async () => {
    const { session, welcome } = await join("new-style", "new");
    expect(welcome).toMatchObject({ terminalUpdateReturnsCredit: true, assignmentBatches: true });
    const [r1, r2, r3] = await enqueueEach(3);

    session.send({ kind: "ready", slots: 1 });
    const [a1] = await answers(session);
    expect(a1).toMatchObject({ kind: "assignment", rolloutId: r1 });

    session.send({ kind: "update", attemptId: (a1 as { attemptId: string }).attemptId, status: "SUCCEEDED" });
    const [a2, ...none] = await answers(session);
    expect(a2).toMatchObject({ kind: "assignment", rolloutId: r2 });
    expect(none).toEqual([]);
    const a2Id = (a2 as { attemptId: string }).attemptId;

    // A repeat of the same outcome is accepted as a no-op, and returns nothing.
    session.send({ kind: "update", attemptId: (a1 as { attemptId: string }).attemptId, status: "SUCCEEDED" });
    session.send({ kind: "update", attemptId: a2Id, status: "RUNNING" });
    expect(await answers(session)).toEqual([]);

    session.send({ kind: "update", attemptId: a2Id, status: "FAILED", errorMessage: "boom" });
    const [a3] = await answers(session);
    expect(a3).toMatchObject({ kind: "assignment", rolloutId: r3 });
    session.send({ kind: "update", attemptId: (a3 as { attemptId: string }).attemptId, status: "SUCCEEDED" });
    expect(await answers(session)).toEqual([]);

    // The credit it returned waits for the next rollout: one, not two.
    const [r4, r5] = await enqueueEach(2);
    expect(rolloutIdsIn(await answers(session))).toEqual([r4]);
    expect((await clients.rollouts.getRollout({ rolloutId: r5! })).rollout?.attemptCount).toBe(0);
    session.close();
  });

  it("a late terminal update (the attempt timed out on the server) is Rejected and still returns the credit, once", async () => {
    const { session } = await join("late-reporter", "new");
    const { rollout } = await clients.rollouts.enqueueRollout({ config: { timeout: durationFromMs(200) } });
    session.send({ kind: "ready", slots: 1 });
    const assigned = await session.nextOf("assignment");
    expect(assigned.rolloutId).toBe(rollout!.rolloutId);
    expect((await session.nextOf("cancel")).attemptId).toBe(assigned.attemptId);
    expect((await clients.attempts.getAttempt({ attemptId: assigned.attemptId })).attempt?.status).toBe(AttemptStatus.TIMEOUT);

    const [next, after] = await enqueueEach(2);
    session.send({ kind: "update", attemptId: assigned.attemptId, status: "SUCCEEDED" });
    const said = await answers(session);
    expect(said.find((m) => m.kind === "rejected")).toMatchObject({ code: FAILED_PRECONDITION });
    expect(rolloutIdsIn(said)).toEqual([next]);

    session.send({ kind: "update", attemptId: assigned.attemptId, status: "SUCCEEDED" });
    expect(rolloutIdsIn(await answers(session))).toEqual([]);
    expect((await clients.rollouts.getRollout({ rolloutId: after! })).rollout?.attemptCount).toBe(0);
    session.close();
  });

  it("a terminal update refused as malformed (NaN in its metadata) still returns the credit, once", async () => {
    const { session } = await join("malformed", "new");
    await enqueueEach(1);
    session.send({ kind: "ready", slots: 1 });
    const assigned = await session.nextOf("assignment");
    const [next, after] = await enqueueEach(2);

    session.send({ kind: "update", attemptId: assigned.attemptId, status: "FAILED", metadata: { score: Number.NaN } });
    const said = await answers(session);
    expect(said.find((m) => m.kind === "rejected")).toMatchObject({ code: INVALID_ARGUMENT });
    expect(rolloutIdsIn(said)).toEqual([next]);

    // Resent well-formed, it is applied, and returns nothing more.
    session.send({ kind: "update", attemptId: assigned.attemptId, status: "FAILED", errorMessage: "boom" });
    expect(await answers(session)).toEqual([]);
    expect((await clients.attempts.getAttempt({ attemptId: assigned.attemptId })).attempt?.status).toBe(AttemptStatus.FAILED);
    expect((await clients.rollouts.getRollout({ rolloutId: after! })).rollout?.attemptCount).toBe(0);
    session.close();
  });

  it("a slot freed by a Cancel without a report needs Ready", async () => {
    const { session } = await join("cancelled", "new");
    const [doomed] = await enqueueEach(1);
    session.send({ kind: "ready", slots: 1 });
    await session.nextOf("assignment");
    await clients.rollouts.cancelRollout({ rolloutId: doomed! });
    await session.nextOf("cancel");

    const [next] = await enqueueEach(1);
    expect(await answers(session)).toEqual([]);
    session.send({ kind: "ready", slots: 1 });
    expect(rolloutIdsIn(await answers(session))).toEqual([next]);
    session.close();
  });

  it("an attempt resumed after a reconnect returns its credit with its terminal update", async () => {
    const first = await join("reconnecting", "new");
    await enqueueEach(1);
    first.session.send({ kind: "ready", slots: 1 });
    const held = await first.session.nextOf("assignment");
    first.session.close();

    const { session, welcome } = await join("reconnecting", "new", { runningAttemptIds: [held.attemptId] });
    expect(welcome.resumedAttemptIds).toEqual([held.attemptId]);
    const [next] = await enqueueEach(1);
    // No Ready on this session: the resumed attempt's result frees the slot.
    session.send({ kind: "update", attemptId: held.attemptId, status: "SUCCEEDED" });
    expect(rolloutIdsIn(await answers(session))).toEqual([next]);
    session.close();
  });

  it("a runner that accepts batches gets the rollouts due at once in one AssignmentBatch, in queue order", async () => {
    const { session } = await join("batched", "new", { capacity: 5 });
    const queued = await enqueueEach(3);
    session.send({ kind: "ready", slots: 5 });
    const said = await answers(session);
    expect(kinds(said)).toEqual(["assignment_batch"]);
    expect(rolloutIdsIn(said)).toEqual(queued);

    // Two credits left: one EnqueueRollouts of three hands two over in one batch.
    const { rollouts } = await clients.rollouts.enqueueRollouts({ requests: [{}, {}, {}] });
    const batch = await session.nextOf("assignment_batch");
    expect(batch.assignments.map((a) => a.rolloutId)).toEqual(rollouts.slice(0, 2).map((r) => r.rolloutId));
    session.close();
  });

  it("batching keeps the order of a Cancel sent in the same dispatch run as an assignment", async () => {
    // Two attempts time out in one watchdog run; each rollout is retried at once on the same runner
    // (nobody else could take it), and the runner is told to stop the attempt that timed out. Batched or
    // not, the runner must see the same sequence.
    const orderSeen = async (workerId: string, style: "old" | "new") => {
      const { session } = await join(workerId, style, { capacity: 4 });
      session.send({ kind: "ready", slots: 4 });
      const config = { timeout: durationFromMs(300), maxAttempts: 2, retryOn: [AttemptStatus.TIMEOUT] };
      await clients.rollouts.enqueueRollouts({ requests: [{ config }, { config }] });
      const rolloutOf = new Map<string, string>();
      // Named by first appearance in `order`: which rollout's timer fires first is not ours to fix.
      const names = new Map<string, string>();
      const name = (rolloutId: string) => names.get(rolloutId) ?? names.set(rolloutId, "AB"[names.size]!).get(rolloutId)!;
      const order: string[] = [];
      // Two cancels and two retries, in whatever order the server sends them.
      while (order.length < 4) {
        const message = await session.next();
        const assignments = message.kind === "assignment" ? [message] : message.kind === "assignment_batch" ? message.assignments : [];
        for (const a of assignments) {
          rolloutOf.set(a.attemptId, a.rolloutId);
          if (a.sequenceId > 1) order.push(`assignment ${name(a.rolloutId)}.${a.sequenceId}`);
        }
        if (message.kind === "cancel") order.push(`cancel ${name(rolloutOf.get(message.attemptId)!)}.1`);
      }
      session.close();
      return order;
    };
    const oldOrder = await orderSeen("order-old", "old");
    const newOrder = await orderSeen("order-new", "new");
    expect(oldOrder).toHaveLength(4);
    expect(newOrder).toEqual(oldOrder);
  });
});
