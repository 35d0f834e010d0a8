import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import { durationMs, timestampMs } from "@bufbuild/protobuf/wkt";

/** Milliseconds since the Unix epoch; every component reads it from a Clock. */
export type Millis = number;

export interface Clock {
  now(): Millis;
}

export const systemClock: Clock = { now: () => Date.now() };

/**
 * timestampFromMs's message, written as the plain object a protobuf-es message
 * is: create() walks the schema for every call, and every transition stamps a
 * few of these.
 */
export function toTimestamp(ms: Millis): Timestamp {
  const seconds = Math.floor(ms / 1000);
  return { $typeName: "google.protobuf.Timestamp", seconds: BigInt(seconds), nanos: (ms - seconds * 1000) * 1_000_000 };
}

export function msOf(timestamp: Timestamp | undefined): Millis | undefined {
  return timestamp === undefined ? undefined : timestampMs(timestamp);
}

export function msOfDuration(duration: Duration | undefined): Millis | undefined {
  return duration === undefined ? undefined : durationMs(duration);
}
