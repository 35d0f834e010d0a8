import type { DescField, DescMessage, JsonValue, Message } from "@bufbuild/protobuf";
import type { Duration, ListValue, Timestamp, Value } from "@bufbuild/protobuf/wkt";
import { quote } from "../../common/quote.js";
import { invalidArgument } from "../domain/errors.js";

/**
 * Checks that every google.protobuf.Value, Struct, ListValue, Duration and
 * Timestamp inside a request is one the protobuf JSON mapping can write.
 * The binary format carries things JSON cannot: NaN and Infinity, a Value
 * with no kind, Durations beyond ±10,000 years or with nanos of the wrong
 * sign, Timestamps outside years 1–9999. Stored once, such a value makes
 * every later JSON read of the record fail (the Connect port answers 500 to
 * everyone who lists it), so they are refused on the way in, by walking the
 * message's schema: new fields of these types are covered without a change
 * here.
 */

/** ±10,000 years, the range the Duration spec allows. */
export const DURATION_MAX_SECONDS = 315_576_000_000n;
/** 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, the range the Timestamp spec allows. */
export const TIMESTAMP_MIN_SECONDS = -62_135_596_800n;
export const TIMESTAMP_MAX_SECONDS = 253_402_300_799n;
/** Nesting of lists and objects in a Value or Struct; far beyond what real payloads use. */
export const JSON_MAX_DEPTH = 32;
const NANOS_PER_SECOND = 1_000_000_000;

/** Throws INVALID_ARGUMENT naming the first field (as a path, e.g. `input.list[2]`) that JSON could not write. */
export function requireJsonSafe<Desc extends DescMessage>(schema: Desc, message: Message, prefix = ""): void {
  const problem = messageProblem(schema, message, prefix);
  if (problem !== undefined) throw invalidArgument(`${problem.path}: ${problem.reason}`);
}

/** The same check, answering instead of throwing; undefined when all is well. */
export function jsonSafetyProblem(schema: DescMessage, message: Message, prefix = ""): Problem | undefined {
  return messageProblem(schema, message, prefix);
}

export interface Problem {
  /** Where, as a field path in proto names. */
  path: string;
  reason: string;
}

export function durationProblem(duration: Duration): string | undefined {
  const { seconds, nanos } = duration;
  if (seconds > DURATION_MAX_SECONDS || seconds < -DURATION_MAX_SECONDS) {
    return `a duration must be within ±${DURATION_MAX_SECONDS} seconds`;
  }
  if (!Number.isInteger(nanos) || Math.abs(nanos) >= NANOS_PER_SECOND) return "a duration's nanos must be within ±999,999,999";
  if ((seconds > 0n && nanos < 0) || (seconds < 0n && nanos > 0)) return "a duration's seconds and nanos must have the same sign";
  return undefined;
}

export function timestampProblem(timestamp: Timestamp): string | undefined {
  const { seconds, nanos } = timestamp;
  if (seconds < TIMESTAMP_MIN_SECONDS || seconds > TIMESTAMP_MAX_SECONDS) {
    return "a timestamp must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z";
  }
  if (!Number.isInteger(nanos) || nanos < 0 || nanos >= NANOS_PER_SECOND) return "a timestamp's nanos must be within 0..999,999,999";
  return undefined;
}

/** The types whose values are checked (embeddedProblem); any other message is only walked for what it holds. */
const CHECKED_TYPES = new Set([
  "google.protobuf.Struct",
  "google.protobuf.Value",
  "google.protobuf.ListValue",
  "google.protobuf.Duration",
  "google.protobuf.Timestamp",
]);

/**
 * Whether a value of this message type may hold a checked type somewhere below, worked out once per type. A type
 * met again while deciding (a recursive type) counts as yes: that only walks more, never less.
 */
const holdsChecked = new WeakMap<DescMessage, boolean>();
function mayHoldChecked(schema: DescMessage, deciding = new Set<DescMessage>()): boolean {
  if (CHECKED_TYPES.has(schema.typeName) || deciding.has(schema)) return true;
  let held = holdsChecked.get(schema);
  if (held === undefined) {
    deciding.add(schema);
    held = schema.fields.some((field) => fieldMayHoldChecked(field, deciding));
    deciding.delete(schema);
    holdsChecked.set(schema, held);
  }
  return held;
}

function fieldMayHoldChecked(field: DescField, deciding?: Set<DescMessage>): boolean {
  const kind = field.fieldKind;
  if (kind === "message" || (kind === "list" && field.listKind === "message") || (kind === "map" && field.mapKind === "message")) {
    return mayHoldChecked(field.message, deciding);
  }
  return false;
}

/** The members of `schema` the walk visits, once per schema: a heartbeat's GPU list, say, holds no checked type. */
const walkedMembers = new WeakMap<DescMessage, DescMessage["members"]>();
export function membersToWalk(schema: DescMessage): DescMessage["members"] {
  let members = walkedMembers.get(schema);
  if (members === undefined) {
    members = schema.members.filter((member) =>
      member.kind === "oneof" ? member.fields.some((field) => fieldMayHoldChecked(field)) : fieldMayHoldChecked(member),
    );
    walkedMembers.set(schema, members);
  }
  return members;
}

function messageProblem(schema: DescMessage, message: Message, prefix: string): Problem | undefined {
  const fields = message as unknown as Record<string, unknown>;
  for (const member of membersToWalk(schema)) {
    if (member.kind === "oneof") {
      const selected = fields[member.localName] as { case: string | undefined; value?: unknown };
      const field = member.fields.find((f) => f.localName === selected.case);
      const problem = field && fieldProblem(field, selected.value, prefix);
      if (problem) return problem;
      continue;
    }
    const problem = fieldProblem(member, fields[member.localName], prefix);
    if (problem) return problem;
  }
  return undefined;
}

function fieldProblem(field: DescField, value: unknown, prefix: string): Problem | undefined {
  const path = `${prefix}${field.name}`;
  switch (field.fieldKind) {
    case "message":
      return value === undefined ? undefined : embeddedProblem(field.message, value, path);
    case "list":
      if (field.listKind !== "message") return undefined;
      return firstOf(value as unknown[], (item, i) => embeddedProblem(field.message, item, `${path}[${i}]`));
    case "map":
      if (field.mapKind !== "message") return undefined;
      return firstOf(Object.entries(value as Record<string, unknown>), ([key, item]) =>
        embeddedProblem(field.message, item, `${path}[${quote(key)}]`),
      );
    default:
      return undefined;
  }
}

/**
 * A field of message type as protobuf-es holds it: Struct fields unboxed to a
 * JsonObject, the other well-known types as their messages.
 */
function embeddedProblem(schema: DescMessage, value: unknown, path: string): Problem | undefined {
  switch (schema.typeName) {
    case "google.protobuf.Struct":
      return jsonProblem(value as JsonValue, path, 1);
    case "google.protobuf.Value":
      return valueProblem(value as Value, path, 1);
    case "google.protobuf.ListValue":
      return listProblem(value as ListValue, path, 1);
    case "google.protobuf.Duration": {
      const reason = durationProblem(value as Duration);
      return reason === undefined ? undefined : { path, reason };
    }
    case "google.protobuf.Timestamp": {
      const reason = timestampProblem(value as Timestamp);
      return reason === undefined ? undefined : { path, reason };
    }
    default:
      return messageProblem(schema, value as Message, `${path}.`);
  }
}

function valueProblem(value: Value, path: string, depth: number): Problem | undefined {
  if (depth > JSON_MAX_DEPTH) return { path, reason: `nests deeper than ${JSON_MAX_DEPTH} levels` };
  const kind = value.kind;
  switch (kind.case) {
    case undefined:
      return { path, reason: "a google.protobuf.Value must hold one of null, number, string, bool, struct or list" };
    case "numberValue":
      return Number.isFinite(kind.value) ? undefined : { path, reason: "a number must be finite (JSON has no NaN or Infinity)" };
    case "structValue":
      return firstOf(Object.entries(kind.value.fields), ([key, item]) => valueProblem(item, member(path, key), depth + 1));
    case "listValue":
      return listProblem(kind.value, path, depth + 1);
    default:
      return undefined;
  }
}

function listProblem(list: ListValue, path: string, depth: number): Problem | undefined {
  if (depth > JSON_MAX_DEPTH) return { path, reason: `nests deeper than ${JSON_MAX_DEPTH} levels` };
  return firstOf(list.values, (item, i) => valueProblem(item, `${path}[${i}]`, depth));
}

/** A Struct field, already unboxed: only numbers can be what JSON cannot write. */
function jsonProblem(value: JsonValue, path: string, depth: number): Problem | undefined {
  if (typeof value === "number") {
    return Number.isFinite(value) ? undefined : { path, reason: "a number must be finite (JSON has no NaN or Infinity)" };
  }
  if (value === null || typeof value !== "object") return undefined;
  if (depth > JSON_MAX_DEPTH) return { path, reason: `nests deeper than ${JSON_MAX_DEPTH} levels` };
  if (Array.isArray(value)) return firstOf(value, (item, i) => jsonProblem(item, `${path}[${i}]`, depth + 1));
  return firstOf(Object.entries(value), ([key, item]) => jsonProblem(item, member(path, key), depth + 1));
}

/** `path.key` for keys that read as names, `path["key"]` (bounded) for the rest. */
function member(path: string, key: string): string {
  return /^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(key) ? `${path}.${key}` : `${path}[${quote(key)}]`;
}

function firstOf<T>(items: readonly T[], check: (item: T, index: number) => Problem | undefined): Problem | undefined {
  for (let i = 0; i < items.length; i++) {
    const problem = check(items[i] as T, i);
    if (problem) return problem;
  }
  return undefined;
}
