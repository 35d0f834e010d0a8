import { create, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { EnqueueRolloutRequestSchema, type Rollout, RolloutSchema, RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { applyReport } from "../../src/server/domain/attempt.js";
import { DomainError } from "../../src/server/domain/errors.js";
import { newAttemptId, newRolloutId } from "../../src/server/domain/ids.js";
import { newRollout } from "../../src/server/domain/rollout.js";
import { toTimestamp } from "../../src/server/domain/time.js";
import { attachSession, newWorkerRecord } from "../../src/server/domain/worker.js";
import { MIGRATIONS, openDatabase } from "../../src/server/store/sqlite-schema.js";
import { SqliteStore } from "../../src/server/store/sqlite-store.js";
import { decodeRollout, encodeRolloutState } from "../../src/server/store/rollout-codec.js";
import type { Store } from "../../src/server/store/store.js";
import { type RowReader, WorkingSet } from "../../src/server/transitions/changes.js";
import { T0 } from "../fixtures.js";
import { coordinatorOn, LIVENESS, OPENING, RecordingLink, STORES, tempDatabasePath } from "../harness.js";

const context = { now: T0, liveness: { heartbeatGraceMs: LIVENESS.heartbeatGraceMs } };
const queued = (id: string): Rollout => newRollout(create(EnqueueRolloutRequestSchema, {}), id, T0);

describe("WorkingSet", () => {
  const stored = queued("ro-1");
  const rows: RowReader = { rollout: (id) => (id === "ro-1" ? stored : undefined), attempt: () => undefined, worker: () => undefined };

  it("reads its own writes and lists each changed row once, with its first before and last after", () => {
    const set = new WorkingSet(rows);
    const running = { ...stored, status: RolloutStatus.RUNNING };
    const done = { ...stored, status: RolloutStatus.SUCCEEDED };
    set.setRollout(running);
    expect(set.rollout("ro-1")).toBe(running);
    set.setRollout(done);
    expect(set.changes().rollouts).toEqual([{ before: stored, after: done }]);
  });

  it("leaves out rows set back to what they were, and marks new rows with no before", () => {
    const set = new WorkingSet(rows);
    set.setRollout({ ...stored, status: RolloutStatus.RUNNING });
    set.setRollout(stored);
    const fresh = queued("ro-2");
    set.setRollout(fresh);
    expect(set.changes().rollouts).toEqual([{ before: undefined, after: fresh }]);
  });
});

describe.each(STORES)("store operations on the %s store", (_, makeStore) => {
  async function withSession(store: Store) {
    const changes = await store.changeWorker("w-1", undefined, (r) =>
      attachSession(r ?? newWorkerRecord("w-1", T0), OPENING, context.liveness, T0),
    );
    return changes.workers[0]!.after.epoch;
  }

  it("claims only rollouts still queued, creating their attempts for the worker", async () => {
    const store = await makeStore();
    await store.enqueueRollouts([queued("ro-a"), queued("ro-b")]);
    const epoch = await withSession(store);
    const first = await store.claimRollouts({ ...context, workerId: "w-1", epoch, rolloutIds: ["ro-a"], newAttemptId });
    expect(first.claimed.map((c) => c.rollout.rolloutId)).toEqual(["ro-a"]);
    const again = await store.claimRollouts({ ...context, workerId: "w-1", epoch, rolloutIds: ["ro-a", "ro-b"], newAttemptId });
    expect(again.claimed.map((c) => c.rollout.rolloutId)).toEqual(["ro-b"]);
    expect((await store.getWorker("w-1"))?.worker.currentAttemptIds).toHaveLength(2);
    expect(await store.queueLength()).toBe(0);
    await store.close();
  });

  it("a write fenced by an older session epoch changes nothing and is ABORTED", async () => {
    const store = await makeStore();
    await store.enqueueRollouts([queued("ro-a")]);
    const old = await withSession(store);
    const { claimed } = await store.claimRollouts({ ...context, workerId: "w-1", epoch: old, rolloutIds: ["ro-a"], newAttemptId });
    const attemptId = claimed[0]!.attempt.attemptId;
    const newer = await withSession(store);
    expect(newer).toBe(old + 1);
    const report = (attempt: Parameters<typeof applyReport>[0]) => applyReport(attempt, { status: AttemptStatus.SUCCEEDED, errorMessage: "" }, T0);
    const stale = store.changeAttempt(attemptId, { workerId: "w-1", epoch: old }, report, context);
    await expect(stale).rejects.toMatchObject({ kind: "aborted" });
    expect((await store.getAttempt(attemptId))?.status).toBe(AttemptStatus.PREPARING);
    expect((await store.getRollout("ro-a"))?.status).toBe(RolloutStatus.PREPARING);
    await store.enqueueRollouts([queued("ro-b")]);
    const staleClaim = store.claimRollouts({ ...context, workerId: "w-1", epoch: old, rolloutIds: ["ro-b"], newAttemptId });
    await expect(staleClaim).rejects.toBeInstanceOf(DomainError);
    expect((await store.getRollout("ro-b"))?.status).toBe(RolloutStatus.QUEUING);
    // The current session's write goes through.
    await store.changeAttempt(attemptId, { workerId: "w-1", epoch: newer }, report, context);
    expect((await store.getRollout("ro-a"))?.status).toBe(RolloutStatus.SUCCEEDED);
    await store.close();
  });

  it("reads the attempts of several rollouts at once, each rollout's oldest first", async () => {
    const store = await makeStore();
    const retried = newRollout(create(EnqueueRolloutRequestSchema, { config: { maxAttempts: 2, retryOn: [AttemptStatus.FAILED] } }), "ro-r", T0);
    await store.enqueueRollouts([retried, queued("ro-b"), queued("ro-never")]);
    const epoch = await withSession(store);
    const claim = (rolloutIds: string[]) => store.claimRollouts({ ...context, workerId: "w-1", epoch, rolloutIds, newAttemptId });
    const [first] = (await claim(["ro-r"])).claimed;
    const fail = (attempt: Parameters<typeof applyReport>[0]) => applyReport(attempt, { status: AttemptStatus.FAILED, errorMessage: "x" }, T0);
    await store.changeAttempt(first!.attempt.attemptId, { workerId: "w-1", epoch }, fail, context);
    const [second] = (await claim(["ro-r"])).claimed;
    const [other] = (await claim(["ro-b"])).claimed;
    expect(second?.attempt.sequenceId).toBe(2);

    const found = await store.attemptsOfRollouts(["ro-r", "ro-b", "ro-never", "ro-missing", "ro-r"]);
    expect([...found.keys()].sort()).toEqual(["ro-b", "ro-r"]);
    expect(found.get("ro-r")!.map((a) => [a.attemptId, a.sequenceId, AttemptStatus[a.status]])).toEqual([
      [first!.attempt.attemptId, 1, "FAILED"],
      [second!.attempt.attemptId, 2, "PREPARING"],
    ]);
    expect(found.get("ro-b")!.map((a) => a.attemptId)).toEqual([other!.attempt.attemptId]);
    expect((await store.attemptsOfRollouts([])).size).toBe(0);
    await store.close();
  });

  it("enqueueing a taken id is ALREADY_EXISTS and adds none of the batch", async () => {
    const store = await makeStore();
    await store.enqueueRollouts([queued("ro-a")]);
    await expect(store.enqueueRollouts([queued("ro-new"), queued("ro-a")])).rejects.toMatchObject({ kind: "already_exists" });
    expect(await store.getRollout("ro-new")).toBeUndefined();
    await store.close();
  });

  it("a report made on a session that a newer one replaced is refused, and the attempt stays as it was", async () => {
    const { coordinator } = coordinatorOn(await makeStore());
    await coordinator.enqueue([create(EnqueueRolloutRequestSchema, {})]);
    const old = new RecordingLink("w-1", "se-old");
    await coordinator.openSession(old, OPENING, []);
    await coordinator.grantCredits(old, 1);
    const attemptId = old.ofCase("assignment")[0]!.attempt!.attemptId;
    const newer = new RecordingLink("w-1", "se-new");
    await coordinator.openSession(newer, OPENING, [attemptId]);
    const stale = coordinator.report(attemptId, { status: AttemptStatus.SUCCEEDED, errorMessage: "" }, { workerId: "w-1", session: old });
    await expect(stale).rejects.toMatchObject({ kind: "aborted" });
    expect((await coordinator.getAttempt(attemptId)).status).toBe(AttemptStatus.RUNNING);
    await coordinator.report(attemptId, { status: AttemptStatus.SUCCEEDED, errorMessage: "" }, { workerId: "w-1", session: newer });
    expect((await coordinator.getAttempt(attemptId)).status).toBe(AttemptStatus.SUCCEEDED);
  });
});

describe("rollout codec", () => {
  it("the rollout as enqueued plus its state read back as the rollout; the state overrides what the message still holds", () => {
    const enqueued = create(RolloutSchema, {
      rolloutId: "ro-1",
      input: { kind: { case: "stringValue", value: "x".repeat(1000) } },
      metadata: { a: 1 },
      config: { maxAttempts: 3 },
      status: RolloutStatus.QUEUING,
      createTime: toTimestamp(T0),
      priority: 5,
      version: 1n,
    });
    const spec = toBinary(RolloutSchema, enqueued);
    const finished = { ...enqueued, status: RolloutStatus.SUCCEEDED, attemptCount: 2, endTime: toTimestamp(T0 + 5), version: 4n };
    expect(decodeRollout(spec, encodeRolloutState(finished))).toEqual(finished);
    // A row written whole before the split (state NULL), then updated.
    const running = { ...enqueued, status: RolloutStatus.RUNNING, version: 2n };
    const whole = toBinary(RolloutSchema, running);
    expect(decodeRollout(whole, null)).toEqual(running);
    expect(decodeRollout(whole, encodeRolloutState(finished))).toEqual(finished);
  });
});

describe("ids", () => {
  it("rollout and attempt ids made by the server sort by creation and never repeat", () => {
    const ids = Array.from({ length: 5000 }, () => newRolloutId());
    expect(new Set(ids).size).toBe(ids.length);
    expect([...ids].sort()).toEqual(ids);
    expect(ids.every((id) => /^ro-[0-9a-f]{16}$/.test(id))).toBe(true);
    expect(newAttemptId()).toMatch(/^at-[0-9a-f]{16}$/);
  });
});

describe("SQLite schema 3", () => {
  it("a rollout written whole by schema 2 reads the same after the migration and takes transitions in place", async () => {
    const path = tempDatabasePath();
    const v2 = openDatabase(path, { migrations: MIGRATIONS.slice(0, 2) });
    const old = queued("ro-old");
    v2.prepare(
      "INSERT INTO rollouts (rollout_id, status, mode, attempt_count, version, message, priority) VALUES (?, 1, 0, 0, 1, ?, 0)",
    ).run("ro-old", toBinary(RolloutSchema, old));
    v2.prepare("INSERT INTO queue (rollout_id) VALUES (?)").run("ro-old");
    v2.close();
    const store = SqliteStore.open(path);
    expect(await store.getRollout("ro-old")).toEqual(old);
    const { coordinator } = coordinatorOn(store);
    await coordinator.recover();
    const link = new RecordingLink("w-1");
    await coordinator.openSession(link, OPENING, []);
    await coordinator.grantCredits(link, 1);
    const attemptId = link.ofCase("assignment")[0]!.attempt!.attemptId;
    await coordinator.report(attemptId, { status: AttemptStatus.SUCCEEDED, errorMessage: "" });
    await store.close();
    const reopened = SqliteStore.open(path);
    expect((await reopened.getRollout("ro-old"))?.status).toBe(RolloutStatus.SUCCEEDED);
    expect((await reopened.getRollout("ro-old"))?.createTime).toEqual(old.createTime);
    await reopened.close();
  });
});
