import { create, type DescMessage, fromBinary, type JsonValue, toBinary, toJsonString } from "@bufbuild/protobuf";
import { ListValueSchema, StructSchema, type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { UpdateAttemptRequestSchema } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { EnqueueRolloutRequestSchema } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { SessionRequestSchema } from "../../src/gen/runnerline/v1/runner_pb.js";
import { SystemSnapshotSchema } from "../../src/gen/runnerline/v1/telemetry_pb.js";
import { SendHeartbeatRequestSchema } from "../../src/gen/runnerline/v1/worker_pb.js";
import {
  durationProblem,
  JSON_MAX_DEPTH,
  jsonSafetyProblem,
  membersToWalk,
  timestampProblem,
} from "../../src/server/services/well-known-types.js";

describe("durations", () => {
  it.each([
    [315_576_000_000n, 999_999_999, true],
    [-315_576_000_000n, -999_999_999, true],
    [0n, -5, true],
    [315_576_000_001n, 0, false],
    [-315_576_000_001n, 0, false],
    [0n, 1_000_000_000, false],
    [0n, -1_000_000_000, false],
    [1n, -1, false],
    [-1n, 1, false],
  ])("%s s %i ns: valid %s", (seconds, nanos, valid) => {
    expect(durationProblem({ seconds, nanos } as never) === undefined).toBe(valid);
  });
});

describe("timestamps", () => {
  it.each([
    [-62_135_596_800n, 0, true], // 0001-01-01T00:00:00Z
    [253_402_300_799n, 999_999_999, true], // 9999-12-31T23:59:59.999999999Z
    [-62_135_596_801n, 0, false],
    [253_402_300_800n, 0, false],
    [0n, -1, false],
    [0n, 1_000_000_000, false],
  ])("%s s %i ns: valid %s", (seconds, nanos, valid) => {
    expect(timestampProblem({ seconds, nanos } as never) === undefined).toBe(valid);
  });
});

// ---- Nothing the validator accepts can fail a JSON read -------------------
//
// Random requests built from edge values of every well-known type: whatever
// the validator lets through is stored as its binary encoding, so it must
// survive binary → message → JSON. (A seeded generator: failures reproduce.)

function random(seed: number) {
  let state = seed >>> 0;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

const NUMBERS = [0, -0, 1.5, -1e308, Number.MAX_VALUE, Number.MIN_VALUE, NaN, Infinity, -Infinity];
const SECONDS = [0n, 1n, -1n, 315_576_000_000n, 315_576_000_001n, -315_576_000_001n, -62_135_596_800n, -62_135_596_801n, 253_402_300_799n, 253_402_300_800n];
const NANOS = [0, 1, -1, 999_999_999, -999_999_999, 1_000_000_000, -1_000_000_000];

function generator(seed: number) {
  const next = random(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T;
  const value = (depth: number): Value => {
    const kinds = depth > 3 ? ["none", "null", "number", "string", "bool"] : ["none", "null", "number", "string", "bool", "struct", "list"];
    switch (pick(kinds)) {
      case "none":
        return create(ValueSchema);
      case "null":
        return create(ValueSchema, { kind: { case: "nullValue", value: 0 } });
      case "number":
        return create(ValueSchema, { kind: { case: "numberValue", value: pick(NUMBERS) } });
      case "string":
        return create(ValueSchema, { kind: { case: "stringValue", value: pick(["", "x", "ü"]) } });
      case "bool":
        return create(ValueSchema, { kind: { case: "boolValue", value: next() < 0.5 } });
      case "struct":
        return create(ValueSchema, {
          kind: { case: "structValue", value: create(StructSchema, { fields: { a: value(depth + 1), b: value(depth + 1) } }) },
        });
      default:
        return create(ValueSchema, { kind: { case: "listValue", value: create(ListValueSchema, { values: [value(depth + 1), value(depth + 1)] }) } });
    }
  };
  const json = (depth: number): JsonValue => {
    const choice = pick(depth > 3 ? ["number", "string", "null"] : ["number", "string", "null", "object", "array"]);
    if (choice === "number") return pick(NUMBERS);
    if (choice === "string") return "s";
    if (choice === "null") return null;
    if (choice === "object") return { a: json(depth + 1), b: json(depth + 1) };
    return [json(depth + 1), json(depth + 1)];
  };
  const struct = () => ({ k: json(1), l: json(1) });
  const time = () => ({ seconds: pick(SECONDS), nanos: pick(NANOS) });
  const maybe = <T>(make: () => T): T | undefined => (next() < 0.6 ? make() : undefined);
  return { value, struct, time, maybe };
}

const samples: [string, DescMessage, (g: ReturnType<typeof generator>) => object][] = [
  ["EnqueueRolloutRequest", EnqueueRolloutRequestSchema, (g) => ({
    input: g.maybe(() => g.value(0)),
    metadata: g.maybe(g.struct),
    config: { timeout: g.maybe(g.time), unresponsiveTimeout: g.maybe(g.time), deadline: g.maybe(g.time), queueTimeout: g.maybe(g.time) },
  })],
  ["SendHeartbeatRequest", SendHeartbeatRequestSchema, (g) => ({ workerId: "w", snapshot: { collectTime: g.maybe(g.time) }, extraStats: g.maybe(g.struct) })],
  ["UpdateAttemptRequest", UpdateAttemptRequestSchema, (g) => ({ attemptId: "a", metadata: g.maybe(g.struct) })],
  ["SessionRequest heartbeat", SessionRequestSchema, (g) => ({
    message: { case: "heartbeat", value: { snapshot: { collectTime: g.maybe(g.time) }, extraStats: g.maybe(g.struct) } },
  })],
];

describe("whatever the validator accepts can be read back as JSON", () => {
  it.each(samples)("%s: 3,000 random requests", (_, schema, make) => {
    let accepted = 0;
    let refused = 0;
    for (let seed = 1; seed <= 3_000; seed++) {
      const message = create(schema, make(generator(seed)) as never);
      if (jsonSafetyProblem(schema, message) !== undefined) {
        refused++;
        continue;
      }
      accepted++;
      const stored = fromBinary(schema, toBinary(schema, message));
      expect(() => toJsonString(schema, stored), `seed ${seed}`).not.toThrow();
    }
    // Both sides were exercised.
    expect(accepted).toBeGreaterThan(100);
    expect(refused).toBeGreaterThan(100);
  });
});

describe("paths and depth", () => {
  it("names the field path, proto names and list indexes", () => {
    const message = create(EnqueueRolloutRequestSchema, { metadata: { outer: { "odd key": [1, NaN] } } });
    expect(jsonSafetyProblem(EnqueueRolloutRequestSchema, message)?.path).toBe('metadata.outer["odd key"][1]');
  });

  it(`refuses nesting deeper than ${JSON_MAX_DEPTH} levels`, () => {
    let deep: JsonValue = 1;
    for (let i = 0; i < JSON_MAX_DEPTH + 1; i++) deep = [deep];
    const message = create(EnqueueRolloutRequestSchema, { metadata: { deep } });
    expect(jsonSafetyProblem(EnqueueRolloutRequestSchema, message)?.reason).toMatch(/deeper/);
  });
});

describe("what the walk visits", () => {
  it("skips members that cannot hold a checked type, and still finds those below the ones it keeps", () => {
    // A heartbeat's GPU list and CPU figures hold no Value, Struct, Duration or Timestamp: not walked.
    const snapshotMembers = membersToWalk(SystemSnapshotSchema).map((m) => m.localName);
    expect(snapshotMembers).toEqual(["collectTime"]);
    // The session request's oneof is kept: its heartbeat reaches a Timestamp and a Struct.
    expect(membersToWalk(SessionRequestSchema).map((m) => m.localName)).toEqual(["message"]);
    const late = create(SessionRequestSchema, {
      message: {
        case: "heartbeat",
        value: { snapshot: { collectTime: { seconds: 253_402_300_800n, nanos: 0 }, gpus: [{ index: 0 }] } },
      },
    });
    expect(jsonSafetyProblem(SessionRequestSchema, late)?.path).toBe("heartbeat.snapshot.collect_time");
    const nan = create(SessionRequestSchema, { message: { case: "heartbeat", value: { extraStats: { load: NaN } } } });
    expect(jsonSafetyProblem(SessionRequestSchema, nan)?.path).toBe("heartbeat.extra_stats.load");
  });
});
