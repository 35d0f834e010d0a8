import { durationMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type { FieldRef, Predicate } from "./compile.js";

/**
 * Whether `message` satisfies `predicate`, in process (the memory store, the
 * watch stream, and what SQL cannot express). Unset times, durations and
 * missing map keys match no comparison, as SQL's NULL does in filter-sql.ts.
 */
export function matchesPredicate(predicate: Predicate, message: object): boolean {
  switch (predicate.kind) {
    case "and":
      return predicate.items.every((item) => matchesPredicate(item, message));
    case "or":
      return predicate.items.some((item) => matchesPredicate(item, message));
    case "not":
      return !matchesPredicate(predicate.item, message);
    case "present":
      return isPresent(readRaw(predicate.field, message));
    case "contains": {
      const raw = readRaw(predicate.field, message);
      if (Array.isArray(raw)) return raw.some((element) => String(element) === predicate.value);
      return typeof raw === "string" && raw.includes(predicate.value);
    }
    case "compare": {
      const value = readValue(predicate.field, message);
      if (value === undefined) return false;
      return compare(value, predicate.operator, predicate.value);
    }
  }
}

function compare(left: string | number | boolean, operator: string, right: string | number | boolean): boolean {
  switch (operator) {
    case "=":
      return left === right;
    case "!=":
      return left !== right;
    case "<":
      return left < right;
    case "<=":
      return left <= right;
    case ">":
      return left > right;
    case ">=":
      return left >= right;
  }
  return false;
}

function readRaw(field: FieldRef, message: object): unknown {
  let value: unknown = message;
  for (const name of field.localNames) {
    if (value === undefined || value === null || typeof value !== "object") return undefined;
    value = (value as Record<string, unknown>)[name];
  }
  return value;
}

/** The field as a comparable value; undefined when unset (messages) or missing (map keys). */
export function readValue(field: FieldRef, message: object): string | number | boolean | undefined {
  const raw = readRaw(field, message);
  if (raw === undefined || raw === null) return undefined;
  switch (field.type) {
    case "time":
      return timestampMs(raw as Parameters<typeof timestampMs>[0]);
    case "duration":
      return durationMs(raw as Parameters<typeof durationMs>[0]);
    case "number":
      return typeof raw === "bigint" ? Number(raw) : (raw as number);
    default:
      return raw as string | number | boolean;
  }
}

function isPresent(raw: unknown): boolean {
  if (raw === undefined || raw === null) return false;
  if (typeof raw === "string") return raw !== "";
  if (typeof raw === "number") return raw !== 0;
  if (typeof raw === "bigint") return raw !== 0n;
  if (typeof raw === "boolean") return raw;
  if (Array.isArray(raw)) return raw.length > 0;
  return true;
}
