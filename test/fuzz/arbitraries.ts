/**
 * fast-check arbitraries for Runnerline's requests, derived from the message
 * descriptors: every field, every enum (plus numbers no enum defines), ids
 * from small pools so that requests hit each other's rollouts and workers,
 * and the well-known types with out-of-range values. Bytes are then sent
 * as they are, mutated, or replaced by noise.
 */
import { create, type DescField, type DescMessage, type MessageShape, ScalarType, toBinary } from "@bufbuild/protobuf";
import fc from "fast-check";

/** Replaced at send time by the id of a rollout or attempt that exists then. */
export const LIVE_ROLLOUT = "@rollout";
export const LIVE_ATTEMPT = "@attempt";
export const WORKER_IDS = ["w-1", "w-2", "w-3", "gpu-1"];

const text = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 12 }) },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 40 }) },
  { weight: 1, arbitrary: fc.integer({ min: 100, max: 20_000 }).map((n) => "x".repeat(n)) },
  { weight: 1, arbitrary: fc.constant("y".repeat(200_000)) },
);

function idFor(name: string): fc.Arbitrary<string> {
  if (name.includes("worker")) return fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...WORKER_IDS) }, { weight: 1, arbitrary: text });
  if (name.includes("rollout")) return fc.oneof({ weight: 5, arbitrary: fc.constant(LIVE_ROLLOUT) }, { weight: 1, arbitrary: text });
  if (name.includes("attempt")) return fc.oneof({ weight: 5, arbitrary: fc.constant(LIVE_ATTEMPT) }, { weight: 1, arbitrary: text });
  return text;
}

const int32 = fc.oneof(fc.integer({ min: -3, max: 20 }), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }));
const int64 = fc.oneof(fc.bigInt({ min: -3n, max: 20n }), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }));
const uint64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });

function scalar(type: ScalarType, name: string): fc.Arbitrary<unknown> {
  switch (type) {
    case ScalarType.STRING:
      return name.endsWith("_id") || name.endsWith("_ids") ? idFor(name) : text;
    case ScalarType.BOOL:
      return fc.boolean();
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return int32;
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return fc.integer({ min: 0, max: 2 ** 32 - 1 });
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return int64;
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return uint64;
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return fc.double();
    case ScalarType.BYTES:
      return fc.uint8Array({ maxLength: 32 });
  }
}

/** JSON for Value/Struct fields: ordinary values, deep nesting, big blobs, and the non-finite numbers binary can carry. */
const jsonLeaf = fc.oneof(fc.string({ maxLength: 8 }), fc.double(), fc.boolean(), fc.constant(null));
const jsonValue: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    jsonLeaf,
    fc.array(tie("value"), { maxLength: 4 }),
    fc.dictionary(fc.string({ maxLength: 6 }), tie("value"), { maxKeys: 4 }),
  ),
})).value;
const deepJson = fc.integer({ min: 1, max: 40 }).map((depth) => {
  let value: unknown = 1;
  for (let i = 0; i < depth; i++) value = { d: value };
  return value;
});
const structJson = fc.oneof(
  fc.dictionary(fc.string({ maxLength: 6 }), jsonValue, { maxKeys: 5 }),
  deepJson.map((d) => ({ deep: d })),
  fc.integer({ min: 1_000, max: 200_000 }).map((n) => ({ blob: "x".repeat(n) })),
);

function wellKnown(message: DescMessage): fc.Arbitrary<unknown> | undefined {
  switch (message.typeName) {
    case "google.protobuf.Struct":
      return structJson;
    case "google.protobuf.Value":
      return fc.oneof(jsonValue, structJson);
    case "google.protobuf.Duration":
    case "google.protobuf.Timestamp":
      return fc.record({
        seconds: fc.oneof(fc.bigInt({ min: -5n, max: 5n }), fc.bigInt({ min: -(2n ** 40n), max: 2n ** 40n })),
        nanos: fc.oneof(fc.integer({ min: -1_000_000_000, max: 1_000_000_000 }), fc.constant(0)),
      }).map((fields) => create(message, fields as never));
    default:
      return undefined;
  }
}

function fieldValue(field: DescField, depth: number): fc.Arbitrary<unknown> {
  switch (field.fieldKind) {
    case "scalar":
      return scalar(field.scalar, field.name);
    case "enum":
      return fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...field.enum.values.map((v) => v.number)) }, { weight: 1, arbitrary: int32 });
    case "message":
      return messageInit(field.message, depth + 1);
    case "list": {
      const item =
        field.listKind === "scalar"
          ? scalar(field.scalar, field.name)
          : field.listKind === "enum"
            ? fc.oneof(fc.constantFrom(...field.enum.values.map((v) => v.number)), int32)
            : messageInit(field.message, depth + 1);
      return fc.array(item, { maxLength: 4 });
    }
    case "map": {
      const value =
        field.mapKind === "scalar" ? scalar(field.scalar, field.name) : field.mapKind === "enum" ? int32 : messageInit(field.message, depth + 1);
      return fc.dictionary(fc.string({ maxLength: 10 }), value, { maxKeys: 4 });
    }
  }
}

/** An init object for `message` with any subset of its fields (one case of each oneof). */
export function messageInit(message: DescMessage, depth = 0): fc.Arbitrary<unknown> {
  const known = wellKnown(message);
  if (known) return known;
  if (depth > 4) return fc.constant({});
  const plain = message.fields.filter((f) => f.oneof === undefined);
  const record = fc.record(Object.fromEntries(plain.map((f) => [f.localName, fieldValue(f, depth)])), { requiredKeys: [] });
  const oneofs = message.oneofs.map((oneof) =>
    fc.option(fc.oneof(...oneof.fields.map((f) => fieldValue(f, depth).map((value) => ({ case: f.localName, value })))), { nil: undefined }),
  );
  return fc.tuple(record, fc.tuple(...oneofs)).map(([fields, cases]) => {
    const init: Record<string, unknown> = { ...fields };
    message.oneofs.forEach((oneof, i) => {
      if (cases[i] !== undefined) init[oneof.localName] = cases[i];
    });
    return init;
  });
}

/** Encodes an init object, resolving live-id markers with `resolve`. Undefined when it cannot be encoded. */
export function encode(message: DescMessage, init: unknown, resolve: (marker: string) => string): Uint8Array | undefined {
  try {
    return toBinary(message, create(message, resolveIds(init, resolve) as never) as MessageShape<DescMessage>);
  } catch {
    return undefined;
  }
}

function resolveIds(value: unknown, resolve: (marker: string) => string): unknown {
  if (value === LIVE_ROLLOUT || value === LIVE_ATTEMPT) return resolve(value);
  if (Array.isArray(value)) return value.map((v) => resolveIds(v, resolve));
  if (value !== null && typeof value === "object" && !(value instanceof Uint8Array) && !("$typeName" in value)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, resolveIds(v, resolve)]));
  }
  return value;
}

/** Byte-level damage to a valid encoding: flips, cuts, insertions, duplicated tails. */
export const mutation = fc.oneof(
  fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bits: fc.integer({ min: 1, max: 255 }) }),
  fc.record({ kind: fc.constant("cut" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
  fc.record({ kind: fc.constant("repeat" as const), at: fc.nat() }),
);
export type Mutation = typeof mutation extends fc.Arbitrary<infer T> ? T : never;

export function mutate(bytes: Uint8Array, m: Mutation): Uint8Array {
  const at = bytes.length === 0 ? 0 : m.at % bytes.length;
  const out = Buffer.from(bytes);
  switch (m.kind) {
    case "flip":
      if (out.length > 0) out[at] = (out[at] as number) ^ m.bits;
      return out;
    case "cut":
      return out.subarray(0, at);
    case "insert":
      return Buffer.concat([out.subarray(0, at), m.bytes, out.subarray(at)]);
    case "repeat":
      return Buffer.concat([out, out.subarray(at)]);
  }
}
