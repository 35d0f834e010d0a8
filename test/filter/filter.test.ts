import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { RolloutSchema } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { WorkerSchema, WorkerStatus } from "../../src/gen/runnerline/v1/worker_pb.js";
import { compileFilter } from "../../src/server/filter/compile.js";
import { matchesPredicate } from "../../src/server/filter/evaluate.js";
import { FilterError, parseFilter } from "../../src/server/filter/parse.js";
import { toTimestamp } from "../../src/server/domain/time.js";
import { T0 } from "../fixtures.js";

const NOW = T0 + 3_600_000;

/** A worker heard from 10 minutes ago, with a GPU label and a snapshot. */
const worker = create(WorkerSchema, {
  workerId: "gpu-host-7",
  status: WorkerStatus.IDLE,
  connected: true,
  capacity: 4,
  labels: { gpu: "h100", "zone-id": "a" },
  currentAttemptIds: ["at-1", "at-2"],
  lastHeartbeatTime: toTimestamp(NOW - 10 * 60_000),
  snapshot: { hostname: "h7", cpu: { usagePercent: 93.5 } },
  version: 7n,
});

const matches = (text: string) => {
  const expression = compileFilter(text, WorkerSchema, NOW);
  return expression === undefined ? true : matchesPredicate(expression.predicate, worker);
};

describe("filter syntax and meaning (AIP-160 subset) on a worker", () => {
  it.each([
    ["", true],
    ["   ", true],
    ["status = IDLE", true],
    ["status = WORKER_STATUS_IDLE", true],
    ["status != IDLE", false],
    ["status = BUSY OR status = IDLE", true],
    ["status = BUSY AND capacity = 4", false],
    ["NOT status = BUSY", true],
    ["-status = BUSY", true],
    ["NOT (status = BUSY OR capacity < 2)", true],
    ["capacity >= 4 capacity <= 4", true], // implicit AND
    ["capacity > 4", false],
    ["capacity > 3.5", true],
    ["version = 7", true],
    ["connected = true", true],
    ["connected = false", false],
    ['worker_id = "gpu-host-7"', true],
    ["worker_id : gpu", true],
    ['worker_id : "host-8"', false],
    ['worker_id < "h"', true],
    ["labels.gpu = h100", true],
    ['labels.gpu = "a100"', false],
    ["labels.gpu != a100", true],
    ["labels.cpu = x", false], // a missing key matches no comparison …
    ["labels.cpu != x", false],
    ["NOT labels.cpu = x", true], // … and its negation matches
    ['labels."zone-id" = a', true],
    ["labels:gpu", true],
    ["labels:cpu", false],
    ["labels.gpu:*", true],
    ["current_attempt_ids : at-2", true],
    ["current_attempt_ids : at-3", false],
    ["snapshot.cpu.usage_percent > 90", true],
    ["snapshot.hostname = h7", true],
    ["snapshot:*", true],
    ["extra_stats:*", false],
    ["last_heartbeat_time < now - 5m", true],
    ["last_heartbeat_time < now - 15m", false],
    ["last_heartbeat_time > now - 1h", true],
    ["worker_id = gpu-host-7", true],
    [`last_heartbeat_time < "${new Date(NOW).toISOString()}"`, true],
    [`last_heartbeat_time >= ${new Date(NOW - 10 * 60_000).toISOString()}`, true],
    ["last_busy_time < now", false], // unset
    ["NOT last_busy_time < now", true],
    ["last_busy_time:*", false],
    ["last_heartbeat_time:*", true],
    ["(status = IDLE AND (labels.gpu = h100 OR labels.gpu = a100)) AND NOT connected = false", true],
  ])("%s → %s", (text, expected) => {
    expect(matches(text)).toBe(expected);
  });

  it.each([
    ["status =", 9, "expected a value"],
    ["= IDLE", 1, "expected a field name"],
    ["status IDLE", 8, "expected an operator"],
    ["bogus = 1", 1, 'unknown field "bogus"'],
    ["snapshot.bogus = 1", 1, 'unknown field "bogus" in "snapshot"'],
    ["status = SLEEPING", 10, '"SLEEPING" is not a value of status'],
    ["status < IDLE", 1, "can only be compared with = and !="],
    ["capacity = many", 12, "expected a number"],
    ["capacity : 4", 1, "applies to text fields"],
    ['last_heartbeat_time < "yesterday"', 23, "RFC 3339"],
    ["last_heartbeat_time < now - 5", 29, "expected a duration"],
    ["last_heartbeat_time < now - 5y", 30, 'unknown duration unit "y"'],
    ["connected = yes", 13, "true or false"],
    ["labels = x", 1, "is a map"],
    ["snapshot = x", 1, "is a message"],
    ["current_attempt_ids = x", 1, "is a list"],
    ['worker_id = "open', 13, "unterminated string"],
    ["(status = IDLE", 15, 'expected ")"'],
    ["status = IDLE)", 14, 'unexpected ")"'],
    ["status = IDLE AND", 18, "expected a field name"],
    ["status = IDLE # x", 15, 'unexpected character "#"'],
    ["last_heartbeat_time < 2026-13-45T00:00:00Z", 23, "not a valid RFC 3339 timestamp"],
    ["extra_stats.x = 1", 1, "free-form JSON"],
  ])("%s → INVALID at %i (%s)", (text, position, message) => {
    let error: unknown;
    try {
      compileFilter(text, WorkerSchema, NOW);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(FilterError);
    expect((error as FilterError).message).toContain(message);
    expect((error as FilterError).position).toBe(position);
  });

  it("names an unexpected character by its whole code point, never half a surrogate pair", () => {
    // Found by the fuzz suite: "\ud83d" alone in the message made grpc-js throw while encoding the status.
    expect(() => parseFilter("status = 😀")).toThrow('unexpected character "😀"');
  });

  it("refuses absurdly long or deep filters instead of recursing without end", () => {
    expect(() => parseFilter("(".repeat(100) + "a = 1" + ")".repeat(100))).toThrow(/nested deeper/);
    expect(() => parseFilter(`worker_id = "${"x".repeat(5_000)}"`)).toThrow(/longer than/);
  });

  it("checks fields per message: rollouts have failure_reason and config.max_attempts, not labels", () => {
    const rollout = create(RolloutSchema, { rolloutId: "ro-1", failureReason: "deadline of 5 ms exceeded", config: { maxAttempts: 3 } });
    const match = (text: string) => matchesPredicate(compileFilter(text, RolloutSchema, NOW)!.predicate, rollout);
    expect(match('failure_reason : "deadline"')).toBe(true);
    expect(match("config.max_attempts >= 3")).toBe(true);
    expect(match("config.timeout > 1s")).toBe(false); // unset duration
    expect(() => compileFilter("labels.gpu = x", RolloutSchema, NOW)).toThrow(/unknown field "labels"/);
  });

  it("binds page tokens to the text, not to when `now` was read", () => {
    const a = compileFilter("last_heartbeat_time < now - 5m", WorkerSchema, NOW);
    const b = compileFilter("last_heartbeat_time < now - 5m", WorkerSchema, NOW + 60_000);
    expect(JSON.stringify({ f: a })).toBe(JSON.stringify({ f: b }));
  });
});

describe("filters in SQL", () => {
  it("runs what has a column in SQL and leaves the rest to the process", async () => {
    const { splitForSql, ROLLOUT_COLUMNS, WORKER_COLUMNS } = await import("../../src/server/store/filter-sql.js");
    const rollout = compileFilter('status = FAILED AND end_time > now - 1h AND failure_reason : "boom"', RolloutSchema, NOW)!;
    const split = splitForSql(rollout.predicate, ROLLOUT_COLUMNS);
    expect(split.sql.map((c) => c.sql)).toEqual(["COALESCE(status = ?, 0)", "COALESCE(end_time > ?, 0)"]);
    expect(split.sql.flatMap((c) => c.params)).toEqual([5, NOW - 3_600_000]);
    expect(split.rest).toMatchObject({ kind: "contains", value: "boom" });
    const labels = splitForSql(compileFilter("NOT labels.gpu = h100 OR connected = true", WorkerSchema, NOW)!.predicate, WORKER_COLUMNS);
    expect(labels.rest).toBeUndefined();
    expect(labels.sql[0]!.params).toEqual(["gpu", "h100", 1]);
  });
});
