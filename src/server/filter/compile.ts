import type { DescEnum, DescField, DescMessage } from "@bufbuild/protobuf";
import { type Literal, type FilterNode, FilterError, type Operator, parseFilter, parseTimestamp } from "./parse.js";

/**
 * Turns a parsed filter into a typed predicate over one message type, using
 * the message's descriptor: field paths are the proto field names
 * (`snapshot.cpu.usage_percent`), enum values their short names (`IDLE`),
 * times compare with RFC 3339 timestamps or `now ± duration`. Every mistake is
 * a FilterError with the column it starts at.
 */

/** The kinds of value a filter compares; int64 becomes number, times and durations milliseconds. */
export type ValueType = "string" | "number" | "bool" | "enum" | "time" | "duration" | "message";

export interface FieldRef {
  /** Proto field names from the root, e.g. ["labels", "gpu"] or ["snapshot", "cpu", "usage_percent"]. */
  names: string[];
  /** The TypeScript property names, for reading messages. */
  localNames: string[];
  /** Index in `names` of a map step (its next name is the key), or -1. */
  mapStep: number;
  type: ValueType;
  /** A repeated field: only `:` (has element) applies. */
  repeated: boolean;
}

export type Predicate =
  | { kind: "and" | "or"; items: Predicate[] }
  | { kind: "not"; item: Predicate }
  | { kind: "compare"; field: FieldRef; operator: Exclude<Operator, ":">; value: string | number | boolean }
  /** Substring of a text field, or element of a repeated field. */
  | { kind: "contains"; field: FieldRef; value: string }
  /** `field:*`, or `map:key`: set (non-default) / key present. */
  | { kind: "present"; field: FieldRef };

/**
 * A checked filter. Page tokens are bound to the filter's text (see toJSON),
 * not to the predicate, because `now` moves between one page and the next.
 */
export class FilterExpression {
  constructor(
    readonly text: string,
    readonly predicate: Predicate,
  ) {}

  toJSON() {
    return this.text;
  }
}

/** Parses and checks `text` against `schema`; undefined for an empty filter. */
export function compileFilter(text: string, schema: DescMessage, now: number): FilterExpression | undefined {
  const node = parseFilter(text);
  return node === undefined ? undefined : new FilterExpression(text, new Checker(schema, now).check(node));
}

const TIMESTAMP_TYPE = "google.protobuf.Timestamp";
const DURATION_TYPE = "google.protobuf.Duration";
const ORDERING = new Set<Operator>(["<", "<=", ">", ">="]);

class Checker {
  constructor(
    private readonly schema: DescMessage,
    private readonly now: number,
  ) {}

  check(node: FilterNode): Predicate {
    switch (node.kind) {
      case "and":
      case "or":
        return { kind: node.kind, items: node.items.map((item) => this.check(item)) };
      case "not":
        return { kind: "not", item: this.check(node.item) };
      case "compare":
        return this.comparison(node);
    }
  }

  private comparison(node: Extract<FilterNode, { kind: "compare" }>): Predicate {
    const resolved = this.resolve(node.path, node.position);
    const { field, enumType } = resolved;
    const { operator, value } = node;
    const where = node.valuePosition;
    if (operator === ":" && value.kind === "any") return { kind: "present", field };
    if (resolved.bareMap) {
      // `labels:gpu` asks whether the key is there.
      if (operator !== ":" || value.kind !== "string") {
        throw new FilterError(`"${node.pathText}" is a map: use ${node.pathText}.KEY to compare a value, or ${node.pathText}:KEY`, node.position);
      }
      return { kind: "present", field: { ...field, names: [...field.names, value.text], localNames: [...field.localNames, value.text], mapStep: field.names.length - 1 } };
    }
    if (field.type === "message") {
      throw new FilterError(`"${node.pathText}" is a message; compare one of its fields, or test presence with ${node.pathText}:*`, node.position);
    }
    if (field.repeated) {
      if (operator !== ":") throw new FilterError(`"${node.pathText}" is a list: use ${node.pathText}:VALUE`, node.position);
      return { kind: "contains", field, value: this.text(value, node.pathText, where) };
    }
    if (operator === ":") {
      if (field.type !== "string") throw new FilterError(`":" (contains) applies to text fields, not to "${node.pathText}" (${field.type})`, node.position);
      return { kind: "contains", field, value: this.text(value, node.pathText, where) };
    }
    if (ORDERING.has(operator) && (field.type === "enum" || field.type === "bool")) {
      throw new FilterError(`"${node.pathText}" (${field.type}) can only be compared with = and !=`, node.position);
    }
    const compared = this.literal(field, enumType, value, node.pathText, where);
    return { kind: "compare", field, operator, value: compared };
  }

  private literal(field: FieldRef, enumType: DescEnum | undefined, value: Literal, path: string, where: number): string | number | boolean {
    const wrong = (expected: string) =>
      new FilterError(`"${path}" is ${field.type === "enum" || field.type === "time" ? "an" : "a"} ${field.type}; expected ${expected}`, where);
    switch (field.type) {
      case "string":
        return this.text(value, path, where);
      case "number":
        if (value.kind !== "number") throw wrong("a number");
        return value.value;
      case "bool":
        if (value.kind === "string" && !value.quoted && (value.text === "true" || value.text === "false")) return value.text === "true";
        throw wrong("true or false");
      case "enum": {
        if (value.kind !== "string" || enumType === undefined) throw wrong("one of " + enumNames(enumType));
        const match = enumType.values.find((v) => v.localName === value.text || v.name === value.text);
        if (match === undefined) throw new FilterError(`"${value.text}" is not a value of ${path}; expected one of ${enumNames(enumType)}`, where);
        return match.number;
      }
      case "time":
        if (value.kind === "timestamp") return value.ms;
        if (value.kind === "now") return this.now + value.offsetMs;
        if (value.kind === "string" && value.quoted) {
          const ms = parseTimestamp(value.text);
          if (ms !== undefined) return ms;
        }
        throw wrong('an RFC 3339 timestamp ("2026-01-02T15:04:05Z") or now - DURATION');
      case "duration":
        if (value.kind !== "duration") throw wrong("a duration such as 30s, 5m, 1h");
        return value.ms;
      case "message":
        throw wrong("a field of it");
    }
  }

  private text(value: Literal, path: string, where: number): string {
    if (value.kind === "string") return value.text;
    if (value.kind === "number" || value.kind === "duration" || value.kind === "timestamp") return value.text;
    throw new FilterError(`"${path}" is text; expected a string`, where);
  }

  private resolve(path: string[], position: number): { field: FieldRef; enumType?: DescEnum; bareMap: boolean } {
    let message: DescMessage | undefined = this.schema;
    const names: string[] = [];
    const localNames: string[] = [];
    let mapStep = -1;
    for (let i = 0; i < path.length; i++) {
      const name = path[i]!;
      if (message === undefined) throw new FilterError(`"${names.join(".")}" has no field "${name}"`, position);
      const field: DescField | undefined = message.fields.find((f) => f.name === name);
      if (field === undefined) {
        const where = names.length === 0 ? "" : ` in "${names.join(".")}"`;
        throw new FilterError(`unknown field "${name}"${where}; known: ${message.fields.map((f) => f.name).join(", ")}`, position);
      }
      names.push(name);
      localNames.push(field.localName);
      const last = i === path.length - 1;
      switch (field.fieldKind) {
        case "scalar":
          if (!last) throw new FilterError(`"${names.join(".")}" has no fields`, position);
          return { field: { names, localNames, mapStep, type: scalarType(field.scalar), repeated: false }, bareMap: false };
        case "enum":
          if (!last) throw new FilterError(`"${names.join(".")}" has no fields`, position);
          return { field: { names, localNames, mapStep, type: "enum", repeated: false }, enumType: field.enum, bareMap: false };
        case "list":
          if (!last) throw new FilterError(`"${names.join(".")}" is a list; its elements cannot be addressed`, position);
          if (field.listKind !== "scalar") throw new FilterError(`"${names.join(".")}" is a list of messages and cannot be filtered`, position);
          return { field: { names, localNames, mapStep, type: scalarType(field.scalar), repeated: true }, bareMap: false };
        case "map": {
          if (field.mapKind !== "scalar" || field.mapKey !== 9 /* string */) {
            throw new FilterError(`"${names.join(".")}" is not a map of text and cannot be filtered`, position);
          }
          if (last) return { field: { names, localNames, mapStep, type: "string", repeated: false }, bareMap: true };
          if (i !== path.length - 2) throw new FilterError(`"${names.join(".")}.${path[i + 1]}" has no fields`, position);
          mapStep = i;
          names.push(path[i + 1]!);
          localNames.push(path[i + 1]!);
          return { field: { names, localNames, mapStep, type: scalarType(field.scalar), repeated: false }, bareMap: false };
        }
        case "message": {
          const typeName = field.message.typeName;
          if (typeName === TIMESTAMP_TYPE || typeName === DURATION_TYPE) {
            if (!last) throw new FilterError(`"${names.join(".")}" has no fields`, position);
            const type = typeName === TIMESTAMP_TYPE ? "time" : "duration";
            return { field: { names, localNames, mapStep, type, repeated: false }, bareMap: false };
          }
          if (typeName.startsWith("google.protobuf.")) {
            // Struct and Value hold arbitrary JSON: only their presence can be asked.
            if (!last) throw new FilterError(`"${names.join(".")}" holds free-form JSON; only ${names.join(".")}:* applies`, position);
          }
          if (last) return { field: { names, localNames, mapStep, type: "message", repeated: false }, bareMap: false };
          message = field.message;
          break;
        }
      }
    }
    throw new FilterError("empty field path", position);
  }
}

/** ScalarType numbers from descriptor.proto: 9 string, 8 bool, 12 bytes; the rest are numbers. */
function scalarType(scalar: number): ValueType {
  if (scalar === 9) return "string";
  if (scalar === 8) return "bool";
  if (scalar === 12) return "message";
  return "number";
}

function enumNames(enumType: DescEnum | undefined): string {
  return enumType === undefined ? "" : enumType.values.filter((v) => v.number !== 0).map((v) => v.localName).join(", ");
}
