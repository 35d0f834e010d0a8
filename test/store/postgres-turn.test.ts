/**
 * Turns on PostgreSQL (src/server/store/postgres-turn.ts): the transitions
 * asked for in one event-loop turn share one transaction, each caller gets
 * its own operation's changes, later operations see earlier ones, and one
 * operation's refusal is its own.
 */
import { create } from "@bufbuild/protobuf";
import { afterAll, describe, expect, it } from "vitest";
import { AttemptErrorKind, AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { EnqueueRolloutRequestSchema, RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { applyReport } from "../../src/server/domain/attempt.js";
import { newAttemptId } from "../../src/server/domain/ids.js";
import { cancelRollout, newRollout } from "../../src/server/domain/rollout.js";
import { attachSession, newWorkerRecord } from "../../src/server/domain/worker.js";
import { PostgresStore } from "../../src/server/store/postgres-store.js";
import { T0 } from "../fixtures.js";
import { OPENING } from "../harness.js";
import { freshSchema, POSTGRES_AVAILABLE, POSTGRES_URL } from "../postgres.js";

const liveness = { heartbeatGraceMs: 3_000 };
const context = { now: T0, liveness };
const retried = (id: string) =>
  newRollout(create(EnqueueRolloutRequestSchema, { config: { maxAttempts: 2, retryOn: [AttemptStatus.FAILED] } }), id, T0);

describe.skipIf(!POSTGRES_AVAILABLE)("PostgreSQL turns", () => {
  const stores: PostgresStore[] = [];
  afterAll(async () => {
    await Promise.all(stores.map((store) => store.close().catch(() => undefined)));
  });

  /** A store on a schema of its own with two attached workers, counting its commits. */
  async function open() {
    const commits = { count: 0 };
    const store = await PostgresStore.open(POSTGRES_URL, { schema: freshSchema("turn"), poolSize: 3, onCommit: () => commits.count++ });
    stores.push(store);
    const epochs: Record<string, number> = {};
    for (const workerId of ["w-1", "w-2"]) {
      const changes = await store.changeWorker(workerId, undefined, (r) => attachSession(r ?? newWorkerRecord(workerId, T0), OPENING, liveness, T0));
      epochs[workerId] = changes.workers[0]!.after.epoch;
    }
    return { store, commits, epochs };
  }

  it("commits the transitions of one event-loop turn in one transaction, each caller getting its own changes", async () => {
    const { store, commits, epochs } = await open();
    await store.enqueueRollouts(["ro-a", "ro-b", "ro-c", "ro-d"].map(retried));
    const before = commits.count;
    const [one, two] = await Promise.all([
      store.claimRollouts({ ...context, workerId: "w-1", epoch: epochs["w-1"], rolloutIds: ["ro-a", "ro-b"], newAttemptId }),
      store.claimRollouts({ ...context, workerId: "w-2", epoch: epochs["w-2"], rolloutIds: ["ro-c", "ro-d"], newAttemptId }),
    ]);
    expect(commits.count - before).toBe(1);
    expect(one.claimed.map((c) => c.rollout.rolloutId)).toEqual(["ro-a", "ro-b"]);
    expect(two.claimed.map((c) => c.rollout.rolloutId)).toEqual(["ro-c", "ro-d"]);
    // Each caller's changes are its own operation's: its rollouts, its attempts, its worker.
    expect(one.changes.workers.map((w) => w.after.worker.workerId)).toEqual(["w-1"]);
    expect(two.changes.rollouts.map((r) => r.after.rolloutId)).toEqual(["ro-c", "ro-d"]);
    expect(await store.queueLength()).toBe(0);
    expect((await store.getWorker("w-1"))?.worker.currentAttemptIds).toHaveLength(2);
    expect((await store.getRollout("ro-d"))?.status).toBe(RolloutStatus.PREPARING);
  });

  it("fails a refused operation alone: the others of its turn commit", async () => {
    const { store, epochs } = await open();
    await store.enqueueRollouts([retried("ro-e")]);
    const [missing, stale, claimed] = await Promise.allSettled([
      store.changeAttempt("at-none", undefined, (a) => a, context),
      store.claimRollouts({ ...context, workerId: "w-2", epoch: epochs["w-2"]! + 7, rolloutIds: ["ro-e"], newAttemptId }),
      store.claimRollouts({ ...context, workerId: "w-1", epoch: epochs["w-1"], rolloutIds: ["ro-e"], newAttemptId }),
    ]);
    expect(missing).toMatchObject({ status: "rejected", reason: { kind: "not_found" } });
    expect(stale).toMatchObject({ status: "rejected", reason: { kind: "aborted" } });
    expect(claimed.status === "fulfilled" && claimed.value.claimed.map((c) => c.attempt.workerId)).toEqual(["w-1"]);
    expect((await store.getRollout("ro-e"))?.status).toBe(RolloutStatus.PREPARING);
  });

  it("applies a turn's operations in arrival order, each seeing the ones before it", async () => {
    const { store, epochs } = await open();
    await store.enqueueRollouts([retried("ro-f")]);
    // A claim, then a cancel of the same rollout in the same turn: the cancel aborts the attempt the claim made.
    const [claim, cancel] = await Promise.all([
      store.claimRollouts({ ...context, workerId: "w-1", epoch: epochs["w-1"], rolloutIds: ["ro-f"], newAttemptId: () => "at-f1" }),
      store.changeRollout("ro-f", (rollout) => ({ after: cancelRollout(rollout, T0), attemptErrorKind: AttemptErrorKind.CANCELLED, reason: "rollout cancelled" }), context),
    ]);
    expect(claim.claimed.map((c) => c.attempt.attemptId)).toEqual(["at-f1"]);
    expect(cancel.attempts.map((c) => [c.before?.status, c.after.status])).toEqual([[AttemptStatus.PREPARING, AttemptStatus.FAILED]]);
    expect((await store.getRollout("ro-f"))?.status).toBe(RolloutStatus.CANCELLED);
    expect((await store.getAttempt("at-f1"))?.status).toBe(AttemptStatus.FAILED);
    expect((await store.getWorker("w-1"))?.worker.currentAttemptIds).toEqual([]);
  });

  it("puts a rollout that failed and went back to the queue within one turn at the back of the queue", async () => {
    const { store, epochs } = await open();
    await store.enqueueRollouts([retried("ro-first")]);
    await store.enqueueRollouts([retried("ro-second")]);
    expect(await store.queuedRolloutIds()).toEqual(["ro-first", "ro-second"]);
    const failed = { status: AttemptStatus.FAILED, errorMessage: "the environment errored once" };
    await Promise.all([
      store.claimRollouts({ ...context, workerId: "w-1", epoch: epochs["w-1"], rolloutIds: ["ro-first"], newAttemptId: () => "at-first-1" }),
      store.changeAttempt("at-first-1", { workerId: "w-1", epoch: epochs["w-1"]! }, (attempt) => applyReport(attempt, failed, T0), context),
    ]);
    expect((await store.getRollout("ro-first"))?.status).toBe(RolloutStatus.REQUEUING);
    expect(await store.queuedRolloutIds()).toEqual(["ro-second", "ro-first"]);
  });
});
