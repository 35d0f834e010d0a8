/**
 * Full shapes (src/server/domain/full-shape.ts): a record carries every field
 * of its schema from the start, so that the domain's transitions never add a
 * property (V8's slow path). A transition that adds one, or a constructor
 * that forgets the shape, fails here; and the shape changes nothing that
 * protobuf-es reads (bytes, equality, JSON).
 */
import { create, equals, fromBinary, toBinary, toJson } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { type Attempt, AttemptSchema, AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { EnqueueRolloutRequestSchema, type Rollout, RolloutSchema } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { SystemSnapshotSchema } from "../../src/gen/runnerline/v1/telemetry_pb.js";
import { type Worker, WorkerSchema } from "../../src/gen/runnerline/v1/worker_pb.js";
import { applyReport, expireAttempt, newAttempt, recordSignOfLife } from "../../src/server/domain/attempt.js";
import { fullShape } from "../../src/server/domain/full-shape.js";
import { cancelRollout, dispatchRollout, followAttempt, newRollout } from "../../src/server/domain/rollout.js";
import { attachSession, holdAttempt, newWorkerRecord, recordHeartbeat, recordWorkRequest, releaseAttempt } from "../../src/server/domain/worker.js";
import { decodeRollout } from "../../src/server/store/rollout-codec.js";
import { decodeRecord } from "../../src/server/store/decode-record.js";
import { T0 } from "../fixtures.js";

const liveness = { heartbeatGraceMs: 15_000 };
const keysOf = (message: object) => Object.keys(message);
const schemaKeys = (schema: typeof RolloutSchema | typeof AttemptSchema | typeof WorkerSchema) => [
  "$typeName",
  ...schema.members.map((member) => member.localName),
];

describe("fullShape", () => {
  it("lays every field of the schema out in its order, and protobuf-es reads the result as the original", () => {
    const sparse = create(RolloutSchema, { rolloutId: "ro-1", status: 1, input: { kind: { case: "stringValue", value: "x" } } });
    const shaped = fullShape(RolloutSchema, sparse);
    expect(keysOf(shaped)).toEqual(schemaKeys(RolloutSchema));
    expect(keysOf(sparse)).not.toEqual(keysOf(shaped)); // protobuf-es leaves unset sub-messages out
    expect(toBinary(RolloutSchema, shaped)).toEqual(toBinary(RolloutSchema, sparse));
    expect(equals(RolloutSchema, shaped, sparse)).toBe(true);
    expect(toJson(RolloutSchema, shaped)).toEqual(toJson(RolloutSchema, sparse));
    expect(create(RolloutSchema, shaped)).toBe(shaped); // still a message of its type
  });
});

describe("records keep one shape through their transitions", () => {
  const rollout = newRollout(create(EnqueueRolloutRequestSchema, { rolloutId: "ro-1" }), "ro-1", T0);
  const attempt = newAttempt(rollout, "at-1", "w-1", T0);

  it("rollouts: enqueue, dispatch, follow an attempt, cancel", () => {
    const dispatched = dispatchRollout(rollout, attempt, T0 + 1);
    const running = followAttempt(dispatched, applyReport(attempt, { status: AttemptStatus.RUNNING, errorMessage: "" }, T0 + 2), T0 + 2);
    const finished = followAttempt(running, applyReport(attempt, { status: AttemptStatus.SUCCEEDED, errorMessage: "" }, T0 + 3), T0 + 3);
    const cancelled = cancelRollout(rollout, T0 + 4);
    for (const r of [rollout, dispatched, running, finished, cancelled] satisfies Rollout[]) {
      expect(keysOf(r)).toEqual(schemaKeys(RolloutSchema));
    }
  });

  it("attempts: created, alive, finished, failed, expired", () => {
    const alive = recordSignOfLife(attempt, T0 + 1);
    const succeeded = applyReport(alive, { status: AttemptStatus.SUCCEEDED, errorMessage: "" }, T0 + 2);
    const failed = applyReport(alive, { status: AttemptStatus.FAILED, errorMessage: "boom" }, T0 + 2);
    const expired = expireAttempt(alive, AttemptStatus.UNRESPONSIVE, "silent", T0 + 3);
    for (const a of [attempt, alive, succeeded, failed, expired] satisfies Attempt[]) {
      expect(keysOf(a)).toEqual(schemaKeys(AttemptSchema));
    }
  });

  it("workers: created, attached, beating, asking for work, holding and releasing an attempt", () => {
    const created = newWorkerRecord("w-1", T0);
    const attached = attachSession(created, { labels: { zone: "a" }, capacity: 2, clientVersion: "t", peer: "p" }, liveness, T0);
    const beating = recordHeartbeat(attached, { snapshot: create(SystemSnapshotSchema), extraStats: { a: 1 } }, liveness, T0 + 1);
    const asking = recordWorkRequest(beating, liveness, T0 + 2);
    const holding = holdAttempt(asking, attempt, liveness, T0 + 3);
    const released = releaseAttempt(holding, attempt, false, liveness, T0 + 4);
    for (const w of [created, attached, beating, asking, holding, released].map((r) => r.worker) satisfies Worker[]) {
      expect(keysOf(w)).toEqual(schemaKeys(WorkerSchema));
    }
  });

  it("records decoded from a store have the same shape as records made here", () => {
    const finished = applyReport(attempt, { status: AttemptStatus.SUCCEEDED, errorMessage: "" }, T0 + 2);
    expect(keysOf(decodeRecord(AttemptSchema, toBinary(AttemptSchema, finished)))).toEqual(keysOf(finished));
    expect(keysOf(decodeRollout(toBinary(RolloutSchema, rollout), undefined))).toEqual(keysOf(rollout));
    const worker = newWorkerRecord("w-1", T0).worker;
    expect(keysOf(decodeRecord(WorkerSchema, toBinary(WorkerSchema, worker)))).toEqual(keysOf(worker));
    // Plain decoding leaves the unset sub-messages out: the shape is the helper's doing.
    expect(keysOf(fromBinary(AttemptSchema, toBinary(AttemptSchema, attempt)))).not.toEqual(keysOf(attempt));
  });
});
