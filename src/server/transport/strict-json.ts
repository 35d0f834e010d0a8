import type { DescEnum, DescField, DescMessage } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";

/**
 * A JSON body decoder for one request type that refuses what protobuf's JSON
 * reader lets through or reports without naming the field: an explicit null
 * (outside google.protobuf.Value, where null is a value) and an unknown enum
 * name. Unknown keys are refused by the reader itself (ignoreUnknownFields:
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
      checkMessage(field.message, value, `${name}.`);
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
