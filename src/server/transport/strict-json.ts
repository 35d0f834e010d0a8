import { type DescEnum, type DescField, type DescMessage, fromJson, type JsonValue } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";

/**
 * A JSON body decoder for one request type that refuses what protobuf's JSON
 * reader lets through or reports without naming the field: an explicit null
 * (outside google.protobuf.Value, where null is a value), an unknown enum
 * name, and a Duration, Timestamp or FieldMask not in its string form. Unknown keys are refused by the reader itself (ignoreUnknownFields:
 * false). Only requests in JSON pay for it; binary and gRPC never see it.
 */
export function strictJsonDecoder(schema: DescMessage): { decode(bytes?: Uint8Array): string } {
  const utf8 = new TextDecoder();
  return {
    decode(bytes) {
      const text = utf8.decode(bytes);
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        // Left to the protobuf reader, which reports it as invalid_argument.
        return text;
      }
      checkMessage(schema, json, "");
      return text;
    },
  };
}

function checkMessage(schema: DescMessage, json: unknown, path: string): void {
  if (json === null || typeof json !== "object" || Array.isArray(json) || isWellKnown(schema)) return;
  for (const [key, value] of Object.entries(json)) {
    const field = schema.fields.find((f) => f.jsonName === key || f.name === key);
    if (field === undefined) continue;
    const name = `${path}${field.name}`;
    if (value === null) {
      if (nullAllowed(field)) continue;
      throw invalid(`${name} is null; leave the field out to unset it`);
    }
    checkField(field, value, name);
  }
}

function checkField(field: DescField, value: unknown, name: string): void {
  switch (field.fieldKind) {
    case "enum":
      checkEnum(field.enum, value, name);
      return;
    case "message":
      if (SCALAR_FORMS[field.message.typeName] !== undefined) checkScalarForm(field.message, value, name);
      else checkMessage(field.message, value, `${name}.`);
      return;
    case "list":
      if (!Array.isArray(value)) return;
      value.forEach((item, i) => {
        if (field.listKind === "enum") checkEnum(field.enum, item, `${name}[${i}]`);
        if (field.listKind === "message") checkMessage(field.message, item, `${name}[${i}].`);
      });
      return;
    case "map":
      if (value === null || typeof value !== "object") return;
      for (const [key, item] of Object.entries(value)) {
        if (field.mapKind === "enum") checkEnum(field.enum, item, `${name}["${key}"]`);
        if (field.mapKind === "message") checkMessage(field.message, item, `${name}["${key}"].`);
      }
      return;
  }
}

/**
 * Well-known types whose JSON form is one string: the reader's refusal names
 * the type and the value but not the field ("cannot decode message
 * google.protobuf.Duration from JSON: 30"); this one names both, and the form.
 */
const SCALAR_FORMS: Record<string, string> = {
  "google.protobuf.Duration": 'a duration string such as "30s" or "1.5s" (seconds with an "s")',
  "google.protobuf.Timestamp": 'an RFC 3339 time string such as "2024-05-01T12:00:00Z"',
  "google.protobuf.FieldMask": 'a comma-separated string of camelCase field paths such as "status,labels"',
};

function checkScalarForm(schema: DescMessage, value: unknown, name: string): void {
  try {
    fromJson(schema, value as JsonValue);
  } catch {
    const given = JSON.stringify(value) ?? String(value);
    throw invalid(`${name}: expected ${SCALAR_FORMS[schema.typeName]}, got ${given.length > 64 ? `${given.slice(0, 64)}…` : given}`);
  }
}

function checkEnum(desc: DescEnum, value: unknown, name: string): void {
  if (typeof value !== "string" || desc.values.some((v) => v.name === value)) return;
  const known = desc.values.map((v) => v.name).join(", ");
  throw invalid(`${name}: unknown ${desc.name} value "${value.slice(0, 64)}"; known: ${known}`);
}

const nullAllowed = (field: DescField): boolean =>
  (field.fieldKind === "message" && field.message.typeName === "google.protobuf.Value") ||
  (field.fieldKind === "enum" && field.enum.typeName === "google.protobuf.NullValue");

/** Well-known types have their own JSON forms (Struct, Value, Timestamp…); the reader checks those. */
const isWellKnown = (schema: DescMessage): boolean => schema.typeName.startsWith("google.protobuf.");

const invalid = (message: string) => new ConnectError(message, Code.InvalidArgument);
