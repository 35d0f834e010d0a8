import { create, fromJson, toJson } from "@bufbuild/protobuf";
import { durationMs as protoDurationMs, timestampFromMs, ValueSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { durationMs, InvalidDurationError } from "../../src/client/duration.js";
import { enqueueRequest, rolloutOutcome } from "../../src/client/rollout-json.js";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutMode, RolloutSchema, RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";

const fixedId = () => "generated-id";

describe("durationMs", () => {
  it("takes milliseconds and strings with a unit", () => {
    expect(durationMs("t", 0)).toBe(0);
    expect(durationMs("t", 1500)).toBe(1500);
    expect(durationMs("t", "250")).toBe(250);
    expect(durationMs("t", "250ms")).toBe(250);
    expect(durationMs("t", "30s")).toBe(30_000);
    expect(durationMs("t", "1.5s")).toBe(1_500);
    expect(durationMs("t", " 5m ")).toBe(300_000);
    expect(durationMs("t", "2h")).toBe(7_200_000);
    expect(durationMs("t", "1d")).toBe(86_400_000);
  });

  it("refuses what is not a duration, naming the field and the value", () => {
    for (const bad of [-1, NaN, Infinity, "", "30 seconds", "-5s", "5x", "s", null, {}, true]) {
      expect(() => durationMs("config.timeout", bad as never), String(bad)).toThrow(InvalidDurationError);
    }
    expect(() => durationMs("config.timeout", "5x")).toThrow(/^config\.timeout: "5x" is not a duration/);
    expect(() => durationMs("t", 1e16)).toThrow(InvalidDurationError);
  });
});

describe("enqueueRequest", () => {
  it("turns plain JSON into the request, durations as google.protobuf.Duration", () => {
    const request = enqueueRequest(
      {
        input: { question: "2+3", tags: [1, null, true] },
        mode: "val",
        resourcesId: "r1",
        metadata: { step: 7 },
        priority: 3,
        config: {
          timeout: "30s",
          unresponsiveTimeout: 5000,
          maxAttempts: 3,
          retryOn: ["FAILED", "UNRESPONSIVE"],
          deadline: "1h",
          queueTimeout: "2m",
          requiredLabels: { gpu: "a100" },
          retryDelay: "500ms",
          retryBackoffCoefficient: 2,
          maxRetryDelay: "10s",
        },
      },
      "rollout",
      fixedId,
    );
    expect(request.rolloutId).toBe("generated-id");
    expect(toJson(ValueSchema, request.input!)).toEqual({ question: "2+3", tags: [1, null, true] });
    expect(request.mode).toBe(RolloutMode.VAL);
    expect(request).toMatchObject({ resourcesId: "r1", metadata: { step: 7 }, priority: 3 });
    const config = request.config!;
    expect(protoDurationMs(config.timeout!)).toBe(30_000);
    expect(protoDurationMs(config.unresponsiveTimeout!)).toBe(5_000);
    expect(protoDurationMs(config.deadline!)).toBe(3_600_000);
    expect(protoDurationMs(config.queueTimeout!)).toBe(120_000);
    expect(protoDurationMs(config.retryDelay!)).toBe(500);
    expect(protoDurationMs(config.maxRetryDelay!)).toBe(10_000);
    expect(config).toMatchObject({ maxAttempts: 3, retryBackoffCoefficient: 2, requiredLabels: { gpu: "a100" } });
    expect(config.retryOn).toEqual([AttemptStatus.FAILED, AttemptStatus.UNRESPONSIVE]);
  });

  it("keeps a given id, and leaves input and config unset when not given", () => {
    const request = enqueueRequest({ rolloutId: "mine" }, "rollout", fixedId);
    expect(request.rolloutId).toBe("mine");
    expect(request.input).toBeUndefined();
    expect(request.config).toBeUndefined();
    expect(request.mode).toBe(RolloutMode.UNSPECIFIED);
    // null is a JSON value like any other.
    expect(toJson(ValueSchema, enqueueRequest({ input: null }, "rollout", fixedId).input!)).toBeNull();
  });

  it("refuses a bad duration, mode or retryOn name with the path to it", () => {
    expect(() => enqueueRequest({ config: { timeout: "soon" } }, "rollouts[2]", fixedId)).toThrow(
      /^rollouts\[2\]\.config\.timeout: "soon" is not a duration/,
    );
    expect(() => enqueueRequest({ mode: "training" as never }, "rollout", fixedId)).toThrow(/rollout\.mode must be "train", "val" or "test"/);
    expect(() => enqueueRequest({ config: { retryOn: ["SUCCEEDED" as never] } }, "rollout", fixedId)).toThrow(
      /rollout\.config\.retryOn\[0\] must be "FAILED", "TIMEOUT" or "UNRESPONSIVE"/,
    );
    expect(() => enqueueRequest(null as never, "rollouts[0]", fixedId)).toThrow(/rollouts\[0\] must be an object/);
  });
});

describe("rolloutOutcome", () => {
  it("is the rollout as plain values", () => {
    const rollout = create(RolloutSchema, {
      rolloutId: "r-1",
      status: RolloutStatus.SUCCEEDED,
      input: fromJson(ValueSchema, { question: "2+3" }),
      result: fromJson(ValueSchema, { answer: 5 }),
      attemptCount: 2,
      latestAttemptId: "a-2",
      metadata: { step: 1 },
      priority: 4,
      createTime: timestampFromMs(1_000),
      endTime: timestampFromMs(2_000),
    });
    expect(rolloutOutcome(rollout)).toEqual({
      rolloutId: "r-1",
      status: "SUCCEEDED",
      succeeded: true,
      result: { answer: 5 },
      input: { question: "2+3" },
      failureReason: "",
      attemptCount: 2,
      latestAttemptId: "a-2",
      metadata: { step: 1 },
      priority: 4,
      createTime: new Date(1_000),
      startTime: undefined,
      endTime: new Date(2_000),
    });
  });

  it("reports a failure with its reason and no result", () => {
    const outcome = rolloutOutcome(create(RolloutSchema, { rolloutId: "r-2", status: RolloutStatus.FAILED, failureReason: "boom" }));
    expect(outcome).toMatchObject({ status: "FAILED", succeeded: false, result: undefined, input: undefined, failureReason: "boom", metadata: {} });
  });
});
