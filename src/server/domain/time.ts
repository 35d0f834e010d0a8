import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import { durationMs, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";

/** Milliseconds since the Unix epoch; every component reads it from a Clock. */
export type Millis = number;

export interface Clock {
  now(): Millis;
}

export const systemClock: Clock = { now: () => Date.now() };

export const toTimestamp = (ms: Millis): Timestamp => timestampFromMs(ms);

export function msOf(timestamp: Timestamp | undefined): Millis | undefined {
  return timestamp === undefined ? undefined : timestampMs(timestamp);
}

export function msOfDuration(duration: Duration | undefined): Millis | undefined {
  return duration === undefined ? undefined : durationMs(duration);
}
