import { isMessage, type JsonValue, toBinary } from "@bufbuild/protobuf";
import { type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import { DomainError, invalidArgument } from "../domain/errors.js";
import { quote } from "../../common/quote.js";

/**
 * Bounds on what clients may send and the server keeps (docs/limits.md).
 * Sizes of JSON values are measured as their JSON text, which is what they
 * cost to store and to hand back to Connect clients.
 */
export interface Limits {
  /** Rollout `input` (default 1 MiB). */
  maxInputBytes: number;
  /** Rollout `metadata` and metadata merged into attempts (default 64 KiB). */
  maxMetadataBytes: number;
  /** Worker labels: pairs, key and value length in bytes. */
  maxLabels: number;
  maxLabelKeyBytes: number;
  maxLabelValueBytes: number;
  /** Rollouts waiting in the queue (QUEUING and REQUEUING) over all clients. */
  maxQueuedRollouts: number;
  /** Open runner sessions, in total and per client connection. */
  maxSessions: number;
  maxSessionsPerConnection: number;
  /** Heartbeats per second one worker may have applied (0: no limit); see HeartbeatGate. */
  heartbeatsPerSecond: number;
  /** A list page or WaitRollouts answer is cut to stay under this many encoded bytes. */
  maxResponseBytes: number;
}

export const DEFAULT_LIMITS: Limits = {
  maxInputBytes: 1024 * 1024,
  maxMetadataBytes: 64 * 1024,
  maxLabels: 64,
  maxLabelKeyBytes: 128,
  maxLabelValueBytes: 1024,
  maxQueuedRollouts: 1_000_000,
  maxSessions: 50_000,
  maxSessionsPerConnection: 20_000,
  heartbeatsPerSecond: 10,
  maxResponseBytes: 4 * 1024 * 1024,
};

/**
 * A JSON value (input, metadata, result) no larger than `max` bytes, as JSON
 * text, or as its protobuf encoding for a google.protobuf.Value; undefined passes.
 */
export function requireBoundedJson(field: string, value: JsonValue | Value | undefined, max: number): void {
  if (value === undefined) return;
  const size = jsonBytes(value);
  if (size > max) throw invalidArgument(`${field} is ${size} bytes as JSON; at most ${max} are accepted`);
}

export function requireBoundedLabels(field: string, labels: Record<string, string>, limits: Limits): void {
  const keys = Object.keys(labels);
  if (keys.length > limits.maxLabels) throw invalidArgument(`${field} has ${keys.length} pairs; at most ${limits.maxLabels} are accepted`);
  for (const key of keys) {
    if (key === "" || Buffer.byteLength(key) > limits.maxLabelKeyBytes) {
      throw invalidArgument(`${field}: keys must be 1-${limits.maxLabelKeyBytes} bytes, got one of ${Buffer.byteLength(key)}`);
    }
    const value = labels[key] as string;
    if (Buffer.byteLength(value) > limits.maxLabelValueBytes) {
      throw invalidArgument(`${field}[${quote(key)}] is ${Buffer.byteLength(value)} bytes; at most ${limits.maxLabelValueBytes} are accepted`);
    }
  }
}

/** Refuses a batch that would take the queue past its bound, before anything is enqueued. */
export function requireQueueRoom(queued: number, adding: number, limits: Limits): void {
  if (queued + adding > limits.maxQueuedRollouts) {
    throw new DomainError(
      "resource_exhausted",
      `the queue holds ${queued} rollouts; adding ${adding} would pass its bound of ${limits.maxQueuedRollouts} (nothing was enqueued)`,
    );
  }
}

export function requireListLength(field: string, length: number, max: number): void {
  if (length > max) throw invalidArgument(`${field} has ${length} entries; at most ${max} are accepted`);
}

const jsonBytes = (value: JsonValue | Value): number =>
  isMessage(value, ValueSchema) ? toBinary(ValueSchema, value).byteLength : Buffer.byteLength(JSON.stringify(value) ?? "");
