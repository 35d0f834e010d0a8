import type { JsonValue } from "@bufbuild/protobuf";

/**
 * The bound on an attempt's result, shared by the server (which refuses larger
 * ones) and the runners (which fail the attempt with a clear message instead
 * of sending something the server would refuse). Results are rewards and
 * small summaries; large artefacts belong in object storage, with their
 * address in the result.
 */
export const RESULT_MAX_BYTES = 64 * 1024;
export const RESULT_MAX_DEPTH = 32;

export interface ResultBoundViolation {
  /** Too deep is a malformed request; too large is a resource limit. */
  kind: "too_deep" | "too_large";
  message: string;
}

/** Why `result` is out of bounds, or undefined when it is within them. */
export function resultBoundViolation(result: JsonValue): ResultBoundViolation | undefined {
  if (depthOf(result) > RESULT_MAX_DEPTH) {
    return { kind: "too_deep", message: `the result nests deeper than ${RESULT_MAX_DEPTH} levels` };
  }
  // JSON length is a close, cheap stand-in for the encoded size of a Value.
  const size = Buffer.byteLength(JSON.stringify(result));
  if (size > RESULT_MAX_BYTES) {
    return { kind: "too_large", message: `the result is ${size} bytes as JSON; at most ${RESULT_MAX_BYTES} are accepted` };
  }
  return undefined;
}

/** How deeply a JSON value nests objects and arrays (a scalar is 0). */
export function depthOf(value: JsonValue): number {
  if (value === null || typeof value !== "object") return 0;
  const children = Array.isArray(value) ? value : Object.values(value);
  let deepest = 0;
  for (const child of children) deepest = Math.max(deepest, depthOf(child));
  return deepest + 1;
}
