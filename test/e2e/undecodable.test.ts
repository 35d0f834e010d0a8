/**
 * Bytes that are not the method's request message, sent by raw clients that do
 * no encoding of their own (identity serializers), on every method of both
 * ports: the answer is INVALID_ARGUMENT with a message that names what was
 * expected and leaks nothing of the decoder.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AttemptService } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutService } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { RunnerService, SessionRequestSchema, SessionResponseSchema } from "../../src/gen/runnerline/v1/runner_pb.js";
import { WorkerService } from "../../src/gen/runnerline/v1/worker_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";

const UNDECODABLE = Buffer.from([0xff]);
const identity = (bytes: Buffer) => bytes;
/** What a decoder says about bad bytes; none of it may reach a client. */
const DECODER_TEXT = /premature EOF|illegal tag|invalid wire type|DataView|out of range|parse binary|deserializ/i;

let server: RunningServer;
let client: grpc.Client;

beforeAll(async () => {
  server = await startServer({ grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", store: "memory", log: () => {} });
  client = new grpc.Client(`127.0.0.1:${server.grpcPort}`, grpc.credentials.createInsecure());
});

afterAll(async () => {
  client?.close();
  await server?.close();
});

type Kind = "unary" | "server_streaming" | "client_streaming" | "bidi_streaming";
const ours = [WorkerService, RolloutService, AttemptService, RunnerService].flatMap((service) =>
  service.methods.map((method) => ({ path: `/${service.typeName}/${method.name}`, kind: method.methodKind as Kind })),
);
const infrastructure: { path: string; kind: Kind }[] = [
  { path: "/grpc.health.v1.Health/Check", kind: "unary" },
  { path: "/grpc.health.v1.Health/List", kind: "unary" },
  { path: "/grpc.health.v1.Health/Watch", kind: "server_streaming" },
  { path: "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", kind: "bidi_streaming" },
  { path: "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", kind: "bidi_streaming" },
];

/** Sends `frames` as they are and resolves with the status the call ended with and the messages before it. */
function rawCall(path: string, kind: Kind, frames: Buffer[]): Promise<grpc.StatusObject & { received: Buffer[] }> {
  return new Promise((resolve) => {
    const received: Buffer[] = [];
    const onStatus = (status: grpc.StatusObject) => resolve({ ...status, received });
    let call: grpc.ClientUnaryCall | grpc.ClientReadableStream<Buffer> | grpc.ClientWritableStream<Buffer> | grpc.ClientDuplexStream<Buffer, Buffer>;
    switch (kind) {
      case "unary":
        call = client.makeUnaryRequest(path, identity, identity, frames[0] as Buffer, () => undefined);
        break;
      case "server_streaming":
        call = client.makeServerStreamRequest(path, identity, identity, frames[0] as Buffer);
        break;
      case "client_streaming":
        call = client.makeClientStreamRequest(path, identity, identity, () => undefined);
        break;
      case "bidi_streaming":
        call = client.makeBidiStreamRequest(path, identity, identity);
        break;
    }
    (call as grpc.ClientUnaryCall).on("status", onStatus);
    (call as NodeJS.EventEmitter).on("error", () => undefined);
    if ("write" in call) {
      for (const frame of frames) call.write(frame);
    }
    if (kind === "server_streaming" || kind === "bidi_streaming") (call as NodeJS.EventEmitter).on("data", (message: Buffer) => received.push(message));
  });
}

describe("undecodable request on the gRPC port", () => {
  it.each([...ours, ...infrastructure])("$path → INVALID_ARGUMENT", async ({ path, kind }) => {
    const status = await rawCall(path, kind, [UNDECODABLE]);
    expect(grpc.status[status.code]).toBe("INVALID_ARGUMENT");
    expect(status.details).not.toMatch(DECODER_TEXT);
  });
});

const frame = (init: Parameters<typeof create<typeof SessionRequestSchema>>[1]) =>
  Buffer.from(toBinary(SessionRequestSchema, create(SessionRequestSchema, init)));

describe("a runner session that sends an undecodable frame", () => {
  it("ends with INVALID_ARGUMENT every time, 20 streams in a row", async () => {
    const path = `/${RunnerService.typeName}/Session`;
    for (let i = 0; i < 20; i++) {
      const frames = [
        frame({ message: { case: "hello", value: { workerId: `garbled-${i}`, capacity: 1 } } }),
        frame({ message: { case: "heartbeat", value: { sequence: 1n } } }),
        UNDECODABLE,
      ];
      const status = await Promise.race([
        // The frames before the bad one are answered first (Welcome, HeartbeatAck), in order.
        rawCall(path, "bidi_streaming", frames).then((s) =>
          [grpc.status[s.code], ...s.received.map((m) => fromBinary(SessionResponseSchema, m).message.case)].join(" after "),
        ),
        new Promise((resolve) => setTimeout(() => resolve("no status within 10 s"), 10_000).unref()),
      ]);
      expect(`stream ${i}: ${String(status)}`).toBe(`stream ${i}: INVALID_ARGUMENT after welcome after heartbeatAck`);
    }
  }, 240_000);
});
