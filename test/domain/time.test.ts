/** domain/time.ts: the Timestamp written as a plain object is the message protobuf-es's timestampFromMs makes. */
import { equals, toBinary } from "@bufbuild/protobuf";
import { TimestampSchema, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { msOf, toTimestamp } from "../../src/server/domain/time.js";

describe("toTimestamp", () => {
  it.each([0, 1, 999, 1_000, 1_765_000_000_123, -1, -1_001, 1_765_000_000_123.5])("%d ms is timestampFromMs's message", (ms) => {
    const ours = toTimestamp(ms);
    const theirs = timestampFromMs(ms);
    expect(ours).toEqual(theirs);
    expect(equals(TimestampSchema, ours, theirs)).toBe(true);
    expect(toBinary(TimestampSchema, ours)).toEqual(toBinary(TimestampSchema, theirs));
    if (Number.isInteger(ms)) expect(msOf(ours)).toBe(ms);
  });
});
