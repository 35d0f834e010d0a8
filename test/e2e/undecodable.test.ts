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

// ---- the HTTP port (connect-node): Connect and gRPC-Web ----------------------

const envelope = (flags: number, data: Uint8Array) => {
  const head = Buffer.alloc(5);
  head.writeUInt8(flags, 0);
  head.writeUInt32BE(data.byteLength, 1);
  return Buffer.concat([head, data]);
};

/** Splits an enveloped body (Connect streaming, gRPC-Web) into its envelopes. */
function envelopes(body: Buffer): { flags: number; data: Buffer }[] {
  const found: { flags: number; data: Buffer }[] = [];
  for (let at = 0; at + 5 <= body.byteLength; ) {
    const length = body.readUInt32BE(at + 1);
    found.push({ flags: body.readUInt8(at), data: body.subarray(at + 5, at + 5 + length) });
    at += 5 + length;
  }
  return found;
}

async function post(path: string, contentType: string, body: Buffer | string) {
  const response = await fetch(`http://127.0.0.1:${server.httpPort}${path}`, {
    method: "POST",
    headers: { "content-type": contentType },
    body: typeof body === "string" ? body : new Uint8Array(body),
  });
  return { status: response.status, body: Buffer.from(await response.arrayBuffer()) };
}

const unaryMethods = ours.filter((method) => method.kind === "unary");
const serverStreamingMethods = ours.filter((method) => method.kind === "server_streaming");

describe("undecodable request on the HTTP port", () => {
  it.each(unaryMethods)("Connect binary $path → 400 invalid_argument", async ({ path }) => {
    const { status, body } = await post(path, "application/proto", UNDECODABLE);
    const error = JSON.parse(body.toString()) as { code: string; message: string };
    expect({ status, code: error.code }).toEqual({ status: 400, code: "invalid_argument" });
    expect(error.message).not.toMatch(DECODER_TEXT);
  });

  it.each(unaryMethods)("gRPC-Web binary $path → INVALID_ARGUMENT", async ({ path }) => {
    const { status, body } = await post(path, "application/grpc-web+proto", envelope(0, UNDECODABLE));
    expect(status).toBe(200);
    const trailer = envelopes(body).find((e) => (e.flags & 0x80) !== 0)?.data.toString() ?? "";
    expect(trailer).toMatch(/^grpc-status: 3\r$/m);
    expect(decodeURIComponent(trailer)).not.toMatch(DECODER_TEXT);
  });

  it.each(unaryMethods)("Connect JSON garbage $path → 400 invalid_argument", async ({ path }) => {
    const { status, body } = await post(path, "application/json", "garbage{");
    expect({ status, code: (JSON.parse(body.toString()) as { code: string }).code }).toEqual({ status: 400, code: "invalid_argument" });
  });

  it.each(serverStreamingMethods)("Connect streaming and gRPC-Web $path → invalid_argument", async ({ path }) => {
    const connect = await post(path, "application/connect+proto", envelope(0, UNDECODABLE));
    const end = envelopes(connect.body).find((e) => (e.flags & 0x02) !== 0)?.data.toString() ?? "";
    const endStream = JSON.parse(end) as { error?: { code: string; message: string } };
    expect(endStream.error?.code).toBe("invalid_argument");
    expect(endStream.error?.message).not.toMatch(DECODER_TEXT);

    const grpcWeb = await post(path, "application/grpc-web+proto", envelope(0, UNDECODABLE));
    const trailer = envelopes(grpcWeb.body).find((e) => (e.flags & 0x80) !== 0)?.data.toString() ?? "";
    expect(trailer).toMatch(/^grpc-status: 3\r$/m);
    expect(decodeURIComponent(trailer)).not.toMatch(DECODER_TEXT);
  });
});
