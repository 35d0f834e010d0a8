/**
 * What the load generator says on the wire: grpc-js clients built from the
 * protobuf-es descriptors (the same definition the server uses), a synthetic
 * host snapshot, and pre-encoded heartbeats so that the generator spends its
 * CPU on the transport, not on re-encoding the same snapshot 10k times a
 * second. The pre-encoded bytes are checked against protobuf-es at start.
 * Everything else (Hello, Ready, AttemptUpdate) is encoded by protobuf-es.
 */
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { grpcMethodPath, grpcServiceDefinition } from "../../src/common/grpc-definition.js";
import { AttemptService } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutService } from "../../src/gen/runnerline/v1/rollout_pb.js";
import {
  type Assignment,
  RunnerService,
  SessionRequestSchema,
  type SessionResponse,
  SessionResponseSchema,
} from "../../src/gen/runnerline/v1/runner_pb.js";
import { type SystemSnapshot, SystemSnapshotSchema } from "../../src/gen/runnerline/v1/telemetry_pb.js";
import { WorkerService } from "../../src/gen/runnerline/v1/worker_pb.js";

export type SessionCall = grpc.ClientDuplexStream<Buffer, SessionResponse>;

/**
 * How the load generators' runners speak (`npm run bench -- --session-messages`):
 * "lean" asks for both session options of runner.proto (a terminal update
 * returns its credit, so no Ready follows it; assignments due at once come
 * as one batch); "classic" asks for neither, as runners did before them: a
 * Ready after every attempt, one Assignment per message. A lean runner whose
 * Welcome does not confirm an option does without it (the echo baseline
 * ignores them, as a server that predates them would).
 */
export type SessionMessages = "lean" | "classic";

export const SESSION_MESSAGES: readonly SessionMessages[] = ["lean", "classic"];

/** The Hello fields that ask for the options of `messages`. */
export function helloOptions(messages: SessionMessages) {
  return messages === "lean" ? { terminalUpdateReturnsCredit: true, acceptsAssignmentBatches: true } : {};
}

/** The assignments a server message carries: one, a batch, or none. */
export function assignmentsIn(response: SessionResponse): Assignment[] {
  const message = response.message;
  if (message.case === "assignment") return [message.value];
  if (message.case === "assignmentBatch") return message.value.assignments;
  return [];
}

const GiB = 1024 ** 3;

/** A GPU host as the runner SDK would report it: 8 × H200, one disk, load averages. */
export function syntheticSnapshot(hostIndex: number): SystemSnapshot {
  return create(SystemSnapshotSchema, {
    collectTime: timestampFromMs(Date.now()),
    hostname: `gpu-${String(hostIndex).padStart(5, "0")}`,
    os: "linux 6.8 (Ubuntu 24.04)",
    cpu: { usagePercent: 37.5, logicalCores: 192, physicalCores: 96, loadAverage: [12.1, 11.7, 10.9] },
    memory: { totalBytes: BigInt(2048 * GiB), usedBytes: BigInt(611 * GiB), availableBytes: BigInt(1400 * GiB) },
    disks: [{ mount: "/", totalBytes: BigInt(7000 * GiB), usedBytes: BigInt(2100 * GiB) }],
    network: { rxBytesPerSecond: 1.25e8, txBytesPerSecond: 3.1e7 },
    gpus: Array.from({ length: 8 }, (_, index) => ({
      index,
      name: "H200",
      utilizationPercent: 93 + index / 4,
      memoryUsedBytes: BigInt(97 * GiB + index),
      memoryTotalBytes: BigInt(141 * GiB),
    })),
  });
}

function varint(value: number): number[] {
  const out: number[] = [];
  while (value > 0x7f) {
    out.push((value & 0x7f) | 0x80);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return out;
}

/**
 * SessionRequest{heartbeat: Heartbeat{snapshot, attempt_ids, sequence}} with
 * the snapshot (and attempt ids) encoded once. Field order matches what
 * protobuf-es writes (field number order), so the bytes are identical.
 */
export class HeartbeatEncoder {
  private readonly prefix: Buffer;
  readonly snapshotBytes: number;

  constructor(snapshot: SystemSnapshot, attemptIds: string[] = []) {
    const snap = toBinary(SystemSnapshotSchema, snapshot);
    this.snapshotBytes = snap.byteLength;
    const parts: number[] = [0x0a, ...varint(snap.byteLength), ...snap];
    for (const id of attemptIds) {
      const bytes = Buffer.from(id, "utf8");
      parts.push(0x1a, ...varint(bytes.length), ...bytes);
    }
    this.prefix = Buffer.from(parts);
  }

  encode(sequence: number): Buffer {
    const seq = sequence > 0 ? [0x20, ...varint(sequence)] : [];
    const innerLength = this.prefix.length + seq.length;
    const head = [0x12, ...varint(innerLength)];
    const out = Buffer.allocUnsafe(head.length + innerLength);
    out.set(head, 0);
    this.prefix.copy(out, head.length);
    out.set(seq, head.length + this.prefix.length);
    return out;
  }
}

export function encodeRequest(message: MessageInitShape<typeof SessionRequestSchema>["message"]): Buffer {
  const bytes = toBinary(SessionRequestSchema, create(SessionRequestSchema, { message }));
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Throws if the hand-made heartbeat bytes differ from protobuf-es's. */
export function checkHeartbeatEncoding(): void {
  const snapshot = syntheticSnapshot(1);
  const ids = ["at-1", "at-2"];
  for (const sequence of [0, 1, 300, 123_456_789]) {
    const mine = new HeartbeatEncoder(snapshot, ids).encode(sequence);
    const theirs = encodeRequest({
      case: "heartbeat",
      value: { snapshot, attemptIds: ids, sequence: BigInt(sequence) },
    });
    if (!mine.equals(theirs)) throw new Error(`heartbeat encoding differs from protobuf-es at sequence ${sequence}`);
  }
}

const runnerDefinition = grpcServiceDefinition(RunnerService);
const sessionMethod = RunnerService.method.session;
const sessionPath = grpcMethodPath(RunnerService, sessionMethod);

/**
 * A grpc-js client with its own HTTP/2 connection (grpc-js shares one
 * connection per target across clients unless the local subchannel pool is
 * asked for).
 */
export function newChannel(address: string): grpc.Client {
  return new grpc.Client(address, grpc.credentials.createInsecure(), {
    "grpc.use_local_subchannel_pool": 1,
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
    "grpc.max_send_message_length": 64 * 1024 * 1024,
  });
}

export function openSession(client: grpc.Client): SessionCall {
  return client.makeBidiStreamRequest(
    sessionPath,
    (buffer: Buffer) => buffer,
    (bytes: Buffer) => fromBinary(SessionResponseSchema, bytes),
    benchMetadata("runner"),
  );
}

/**
 * With `npm run bench -- --auth`, calls carry the bench's tokens (set in the
 * environment by bench/main.ts, inherited by every load process): sessions a
 * runner token, unary calls an admin token. Empty metadata otherwise.
 */
export function benchMetadata(role: "runner" | "admin"): grpc.Metadata {
  const metadata = new grpc.Metadata();
  const token = role === "runner" ? process.env.RUNNERLINE_BENCH_RUNNER_TOKEN : process.env.RUNNERLINE_BENCH_ADMIN_TOKEN;
  if (token) metadata.set("authorization", `Bearer ${token}`);
  return metadata;
}

const definitionCache = new Map<object, grpc.ServiceDefinition>();

export function unary<I, O>(
  client: grpc.Client,
  service: typeof RolloutService | typeof WorkerService | typeof AttemptService,
  localName: string,
  request: I,
  deadlineMs = 30_000,
): Promise<O> {
  let definitions = definitionCache.get(service);
  if (definitions === undefined) definitionCache.set(service, (definitions = grpcServiceDefinition(service)));
  const definition = definitions[localName];
  if (definition === undefined) throw new Error(`no method ${localName}`);
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      definition.path,
      definition.requestSerialize as (value: I) => Buffer,
      definition.responseDeserialize as (bytes: Buffer) => O,
      request,
      benchMetadata("admin"),
      { deadline: Date.now() + deadlineMs },
      (error, response) => (error ? reject(error) : resolve(response as O)),
    );
  });
}

/** Ends runner sessions without reacting to their last answers, then closes their connections. */
export async function endSessions(calls: SessionCall[], clients: grpc.Client[]): Promise<void> {
  for (const call of calls) {
    call.removeAllListeners("data");
    call.on("error", () => {});
    call.end();
  }
  await new Promise((resolve) => setTimeout(resolve, 50));
  for (const client of clients) client.close();
}

export { AttemptService, RolloutService, WorkerService, runnerDefinition };

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes on one host. */
export const wallMs = (): number => performance.timeOrigin + performance.now();
