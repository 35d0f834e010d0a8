import { type DescMessage, type JsonObject, toJson } from "@bufbuild/protobuf";
import { type Duration, durationMs, type Timestamp, timestampMs, type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import { depthOf, resultBoundViolation } from "../../common/attempt-result.js";
import { DomainError, invalidArgument } from "../domain/errors.js";
import { CLIENT_ID_PATTERN, MAX_ID_LENGTH } from "../domain/ids.js";
import { compileFilter, type FilterExpression } from "../filter/compile.js";
import { FilterError } from "../filter/parse.js";
import { durationProblem, timestampProblem } from "./well-known-types.js";

/** Largest custom stats payload a heartbeat may carry (DESIGN §9). */
export const EXTRA_STATS_MAX_BYTES = 64 * 1024;
export const EXTRA_STATS_MAX_DEPTH = 8;

/**
 * An id to look up: present and no longer than any id can be, checked before
 * the lookup so that a NOT_FOUND never repeats an unbounded value.
 */
export function requireId(field: string, value: string): string {
  if (value === "") throw invalidArgument(`${field} is required`);
  return optionalId(field, value);
}

/** An id filter or reference that may be empty; when set, bounded like requireId. */
export function optionalId(field: string, value: string): string {
  if (value.length > MAX_ID_LENGTH) {
    throw invalidArgument(`${field} is ${value.length} characters long; ids have at most ${MAX_ID_LENGTH}`);
  }
  return value;
}

export function requireClientId(field: string, value: string): string {
  requireId(field, value);
  if (!CLIENT_ID_PATTERN.test(value)) {
    throw invalidArgument(`${field} must be 1-128 characters of letters, digits, '.', '_', ':' and '-'`);
  }
  return value;
}

/** Enum fields arrive as numbers; binary clients can send values this server does not know. */
export function requireEnumValue<E extends number>(
  field: string,
  value: E,
  names: Record<number, string>,
  options: { allowUnspecified: boolean },
): E {
  if (names[value] === undefined || (!options.allowUnspecified && value === 0)) {
    throw invalidArgument(`${field} has no valid value (${value})`);
  }
  return value;
}

export function requireEnumValues<E extends number>(field: string, values: E[], names: Record<number, string>): E[] {
  for (const value of values) requireEnumValue(field, value, names, { allowUnspecified: false });
  return values;
}

/** A duration that must be well-formed and not negative; undefined stays undefined. */
export function nonNegativeDurationMs(field: string, duration: Duration | undefined): number | undefined {
  if (duration === undefined) return undefined;
  const problem = durationProblem(duration);
  if (problem !== undefined) throw invalidArgument(`${field}: ${problem}`);
  const ms = durationMs(duration);
  if (ms < 0) throw invalidArgument(`${field} must not be negative`);
  return ms;
}

/** A well-formed timestamp as milliseconds; undefined stays undefined. */
export function optionalTimestampMs(field: string, timestamp: Timestamp | undefined): number | undefined {
  if (timestamp === undefined) return undefined;
  const problem = timestampProblem(timestamp);
  if (problem !== undefined) throw invalidArgument(`${field}: ${problem}`);
  return timestampMs(timestamp);
}

export function boundedExtraStats(stats: JsonObject | undefined): JsonObject | undefined {
  if (stats === undefined) return undefined;
  if (depthOf(stats) > EXTRA_STATS_MAX_DEPTH) {
    throw invalidArgument(`extra_stats nests deeper than ${EXTRA_STATS_MAX_DEPTH} levels`);
  }
  // JSON length is a close, cheap stand-in for the encoded size of a Struct.
  const size = Buffer.byteLength(JSON.stringify(stats));
  if (size > EXTRA_STATS_MAX_BYTES) {
    throw new DomainError("resource_exhausted", `extra_stats is ${size} bytes; at most ${EXTRA_STATS_MAX_BYTES} are kept`);
  }
  return stats;
}

/** An attempt's result must fit the bound the runners check too (common/attempt-result.ts). */
export function boundedResult(result: Value | undefined): Value | undefined {
  if (result === undefined) return undefined;
  const violation = resultBoundViolation(toJson(ValueSchema, result));
  if (violation === undefined) return result;
  throw violation.kind === "too_large"
    ? new DomainError("resource_exhausted", violation.message)
    : invalidArgument(violation.message);
}


/**
 * A list or watch request's `filter`, checked against the message it filters;
 * `now` is what `now` means in it. Mistakes are INVALID_ARGUMENT with the
 * column they start at.
 */
export function requireFilter(text: string, schema: DescMessage, now: number): FilterExpression | undefined {
  try {
    return compileFilter(text, schema, now);
  } catch (error) {
    if (error instanceof FilterError) throw invalidArgument(`filter: ${error.message} (at position ${error.position})`);
    throw error;
  }
}
