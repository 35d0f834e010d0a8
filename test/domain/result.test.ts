import { fromJson, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { RESULT_MAX_BYTES, RESULT_MAX_DEPTH, resultBoundViolation } from "../../src/common/attempt-result.js";
import { applyReport, recordLateReport } from "../../src/server/domain/attempt.js";
import { followAttempt } from "../../src/server/domain/rollout.js";
import { attemptFixture, rolloutFixture, T0 } from "../fixtures.js";

const A = AttemptStatus;
const value = (json: Parameters<typeof fromJson<typeof ValueSchema>>[1]) => fromJson(ValueSchema, json);
const json = (v: ReturnType<typeof value> | undefined) => (v === undefined ? undefined : toJson(ValueSchema, v));

describe("an attempt's result", () => {
  it("is stored from the report that carries it, and kept by reports that carry none", () => {
    const running = applyReport(attemptFixture(), { status: A.RUNNING, errorMessage: "", result: value({ partial: 1 }) }, T0 + 1);
    expect(json(running.result)).toEqual({ partial: 1 });
    expect(running.version).toBe(2n);
    const beat = applyReport(running, { status: A.UNSPECIFIED, errorMessage: "" }, T0 + 2);
    expect(json(beat.result)).toEqual({ partial: 1 });
    const done = applyReport(beat, { status: A.SUCCEEDED, errorMessage: "", result: value({ reward: 0.5 }) }, T0 + 3);
    expect(json(done.result)).toEqual({ reward: 0.5 });
  });

  it("may come with a failure, for the record", () => {
    const failed = applyReport(attemptFixture(), { status: A.FAILED, errorMessage: "boom", result: value("partial") }, T0);
    expect(json(failed.result)).toBe("partial");
  });

  it("of a late report is recorded on the attempt", () => {
    const late = recordLateReport(attemptFixture({ status: A.TIMEOUT }), { status: A.SUCCEEDED, errorMessage: "", result: value(7) }, T0);
    expect(json(late.result)).toBe(7);
    expect(late.status).toBe(A.TIMEOUT);
  });

  it("null is a result, unlike an unset one", () => {
    const done = applyReport(attemptFixture(), { status: A.SUCCEEDED, errorMessage: "", result: value(null) }, T0);
    expect(done.result).toBeDefined();
    expect(json(done.result)).toBeNull();
  });
});

describe("a rollout's result", () => {
  it("is its succeeded attempt's", () => {
    const attempt = attemptFixture({ status: A.SUCCEEDED, result: value({ reward: 1 }) });
    const rollout = followAttempt(rolloutFixture(), attempt, T0);
    expect(rollout.status).toBe(RolloutStatus.SUCCEEDED);
    expect(json(rollout.result)).toEqual({ reward: 1 });
  });

  it("is not taken from an attempt that failed, retried or not", () => {
    const failed = attemptFixture({ status: A.FAILED, result: value("partial") });
    expect(followAttempt(rolloutFixture({}, { maxAttempts: 2, retryOn: [A.FAILED] }), failed, T0).result).toBeUndefined();
    expect(followAttempt(rolloutFixture(), failed, T0).result).toBeUndefined();
  });

  it("stays unset when the succeeded attempt reported none", () => {
    expect(followAttempt(rolloutFixture(), attemptFixture({ status: A.SUCCEEDED }), T0).result).toBeUndefined();
  });
});

describe("the result bound", () => {
  it("accepts up to the byte bound and refuses one byte more", () => {
    const padding = RESULT_MAX_BYTES - JSON.stringify("").length;
    expect(resultBoundViolation("x".repeat(padding))).toBeUndefined();
    expect(resultBoundViolation("x".repeat(padding + 1))).toMatchObject({ kind: "too_large" });
  });

  it("refuses nesting deeper than the depth bound", () => {
    let nested: unknown = 1;
    for (let i = 0; i < RESULT_MAX_DEPTH; i++) nested = [nested];
    expect(resultBoundViolation(nested as number[])).toBeUndefined();
    expect(resultBoundViolation([nested] as number[][])).toMatchObject({ kind: "too_deep" });
  });
});
