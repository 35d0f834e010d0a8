/**
 * The cordon on every store (memory, SQLite, PostgreSQL where one answers):
 * the coordinator's routing, the claim's own check against the stored row,
 * the drain's messages, and a restart.
 */
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { EnqueueRolloutRequestSchema, RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { cordonWorker } from "../../src/server/domain/cordon.js";
import { newAttemptId } from "../../src/server/domain/ids.js";
import { WorkerCordonedError } from "../../src/server/transitions/steps.js";
import { coordinatorOn, LIVENESS, OPENING, RecordingLink, STORES } from "../harness.js";

const request = () => create(EnqueueRolloutRequestSchema, {});
const ops = { reason: "disk swap", by: "ops" };

describe.each(STORES)("cordon on the %s store", (_, makeStore) => {
  it("a cordoned session gets nothing, a held attempt goes on, uncordon serves it at once", async () => {
    const { coordinator } = coordinatorOn(await makeStore());
    const link = new RecordingLink("w-1");
    await coordinator.openSession(link, OPENING, []);
    await coordinator.grantCredits(link, 2);
    const [held] = await coordinator.enqueue([request()]);
    const attemptId = link.ofCase("assignment")[0]!.attempt!.attemptId;
    expect((await coordinator.cordonWorker("w-1", ops)).cordoned).toBe(true);
    const [waiting] = await coordinator.enqueue([request()]);
    expect((await coordinator.getRollout(waiting!.rolloutId)).status).toBe(RolloutStatus.QUEUING);
    await coordinator.report(attemptId, { status: 3, errorMessage: "" });
    expect((await coordinator.getRollout(held!.rolloutId)).status).toBe(RolloutStatus.SUCCEEDED);
    await coordinator.uncordonWorker("w-1");
    expect(link.ofCase("assignment").map((a) => a.rollout!.rolloutId)).toEqual([held!.rolloutId, waiting!.rolloutId]);
  });

  it("the store's claim refuses a worker cordoned behind the coordinator's back, writing nothing", async () => {
    const { coordinator, store, clock } = coordinatorOn(await makeStore());
    const link = new RecordingLink("w-1");
    await coordinator.openSession(link, OPENING, []);
    const [rollout] = await coordinator.enqueue([request()]);
    // Another server cordoned it: the row says so, this coordinator has not heard.
    await store.changeWorker("w-1", undefined, (r) => cordonWorker(r!, ops, clock.now()));
    await store.commit();
    const claim = store.claimRollouts({
      now: clock.now(),
      liveness: LIVENESS,
      workerId: "w-1",
      epoch: (link as { epoch?: number }).epoch,
      rolloutIds: [rollout!.rolloutId],
      newAttemptId,
    });
    await expect(claim).rejects.toBeInstanceOf(WorkerCordonedError);
    expect((await coordinator.getRollout(rollout!.rolloutId)).status).toBe(RolloutStatus.QUEUING);
    // The coordinator's own pick runs into the same refusal: the credit stays, the rollout stays queued.
    await coordinator.grantCredits(link, 1);
    expect(link.ofCase("assignment")).toHaveLength(0);
    expect((await coordinator.getRollout(rollout!.rolloutId)).status).toBe(RolloutStatus.QUEUING);
    await coordinator.uncordonWorker("w-1");
    expect(link.ofCase("assignment").map((a) => a.rollout!.rolloutId)).toEqual([rollout!.rolloutId]);
  });

  it("drain: Drain{exit} now and after a reconnect; Goodbye ends the drain, the cordon survives a restart", async () => {
    const store = await makeStore();
    const { coordinator, clock } = coordinatorOn(store);
    const link = new RecordingLink("w-1");
    await coordinator.openSession(link, OPENING, []);
    await coordinator.drainWorker("w-1", ops);
    expect(link.ofCase("drain")).toMatchObject([{ exit: true, reason: "drained by an operator: disk swap" }]);
    await coordinator.closeSession(link); // lost, not left: the drain still stands
    const again = new RecordingLink("w-1", "se-again");
    await coordinator.openSession(again, OPENING, []);
    expect(again.sent.map((m) => m.message.case)).toEqual(["welcome", "drain"]);
    coordinator.goodbye(again);
    await coordinator.closeSession(again);
    expect(await coordinator.getWorker("w-1")).toMatchObject({ cordoned: true, draining: false, cordonedBy: "ops" });

    const restarted = coordinatorOn(store, clock).coordinator;
    await restarted.recover();
    expect(await restarted.getWorker("w-1")).toMatchObject({ cordoned: true, cordonReason: "disk swap" });
    const back = new RecordingLink("w-1", "se-back");
    await restarted.openSession(back, OPENING, []);
    await restarted.grantCredits(back, 1);
    await restarted.enqueue([request()]);
    expect(back.ofCase("assignment")).toHaveLength(0);
    expect(back.ofCase("drain")).toHaveLength(0);
  });
});
