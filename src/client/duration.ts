import { type Duration, durationFromMs } from "@bufbuild/protobuf/wkt";
import { DAY_MS, durationTextMs } from "../common/duration-text.js";

/** A length of time in the client's plain-JSON API: milliseconds, or a string such as "500ms", "30s", "5m", "2h", "1d". */
export type DurationInput = number | string;

/** Longest duration accepted: what google.protobuf.Duration can carry, rounded down to whole days. */
const MAX_MS = 10_000 * 365 * DAY_MS;

/** A DurationInput the client refused before sending anything; `field` names it, e.g. "rollouts[2].config.timeout". */
export class InvalidDurationError extends RangeError {
  constructor(
    readonly field: string,
    readonly value: unknown,
  ) {
    super(
      `${field}: ${JSON.stringify(value) ?? String(value)} is not a duration; use milliseconds (a number ≥ 0) ` +
        `or a string such as "500ms", "30s", "5m", "2h" or "1d"`,
    );
    this.name = "InvalidDurationError";
  }
}

/** Milliseconds of `value` (a number of milliseconds, or a number with a unit: ms, s, m, h or d; no unit: ms). */
export function durationMs(field: string, value: DurationInput): number {
  let ms: number;
  if (typeof value === "number") {
    ms = value;
  } else if (typeof value === "string") {
    ms = durationTextMs(value, "ms");
  } else {
    ms = NaN;
  }
  if (!Number.isFinite(ms) || ms < 0 || ms > MAX_MS) throw new InvalidDurationError(field, value);
  return ms;
}

/** The google.protobuf.Duration for `value`, or undefined when it is undefined. */
export function toDuration(field: string, value: DurationInput | undefined): Duration | undefined {
  return value === undefined ? undefined : durationFromMs(durationMs(field, value));
}
