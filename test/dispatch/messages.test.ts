import { create, equals, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { SessionResponseSchema } from "../../src/gen/runnerline/v1/runner_pb.js";
import { heartbeatAckMessage } from "../../src/server/dispatch/sessions/messages.js";

describe("heartbeatAckMessage", () => {
  it.each([
    [0n, 0],
    [1n, 1_700_000_000_123],
    [18_446_744_073_709_551_615n, 1_999],
  ])("sequence %s at %i ms is the message create() makes, on the wire too", (sequence, now) => {
    const made = create(SessionResponseSchema, {
      message: { case: "heartbeatAck", value: { sequence, serverTime: timestampFromMs(now) } },
    });
    const plain = heartbeatAckMessage(sequence, now);
    expect(equals(SessionResponseSchema, plain, made)).toBe(true);
    expect(toBinary(SessionResponseSchema, plain)).toEqual(toBinary(SessionResponseSchema, made));
  });
});
