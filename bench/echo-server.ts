/**
 * The baseline: a bare grpc-js server on the same transport and codec as
 * Runnerline (protobuf-es via grpcServiceDefinition), with no domain logic.
 * Hello → Welcome, each Heartbeat → an empty HeartbeatAck, and for dispatch a
 * plain in-memory FIFO of rollout ids handed out over the same session stream
 * against Ready credits. What it sustains is the transport's limit.
 *
 *   tsx bench/echo-server.ts [--grpc-addr 127.0.0.1:0]
 */
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { grpcServiceDefinition } from "../src/common/grpc-definition.js";
import {
  type EnqueueRolloutRequest,
  type EnqueueRolloutResponse,
  type EnqueueRolloutsRequest,
  type EnqueueRolloutsResponse,
  EnqueueRolloutResponseSchema,
  EnqueueRolloutsResponseSchema,
  RolloutService,
  RolloutStatus,
} from "../src/gen/runnerline/v1/rollout_pb.js";
import {
  RunnerService,
  type SessionRequest,
  type SessionResponse,
  SessionResponseSchema,
} from "../src/gen/runnerline/v1/runner_pb.js";

const { values } = parseArgs({ options: { "grpc-addr": { type: "string", default: "127.0.0.1:0" } } });

type Call = grpc.ServerDuplexStream<SessionRequest, SessionResponse>;
interface Waiting {
  call: Call;
  credits: number;
  open: boolean;
}

const queue: string[] = [];
let head = 0;
let nextId = 0;
let waiting: Waiting[] = [];
const emptyAck = create(SessionResponseSchema, { message: { case: "heartbeatAck", value: {} } });

function pump(): void {
  while (waiting.length > 0 && head < queue.length) {
    const session = waiting.shift()!;
    if (!session.open || session.credits <= 0) continue;
    const rolloutId = queue[head++]!;
    session.credits--;
    if (session.credits > 0) waiting.push(session);
    session.call.write(
      create(SessionResponseSchema, {
        message: {
          case: "assignment",
          value: { rollout: { rolloutId }, attempt: { attemptId: `at-${rolloutId}`, rolloutId } },
        },
      }),
    );
  }
  if (head > 4096 && head * 2 > queue.length) {
    queue.splice(0, head);
    head = 0;
  }
}

function enqueueIds(requests: EnqueueRolloutRequest[]): string[] {
  const ids = requests.map((r) => r.rolloutId || `ro-${nextId++}`);
  queue.push(...ids);
  pump();
  return ids;
}

const server = new grpc.Server({
  "grpc.max_receive_message_length": 16 * 1024 * 1024,
  "grpc.max_send_message_length": 16 * 1024 * 1024,
});

server.addService(grpcServiceDefinition(RunnerService), {
  session: (call: Call) => {
    const me: Waiting = { call, credits: 0, open: true };
    const close = () => {
      if (!me.open) return;
      me.open = false;
      waiting = waiting.filter((w) => w !== me);
    };
    call.on("data", (request: SessionRequest) => {
      const message = request.message;
      switch (message.case) {
        case "hello":
          call.write(create(SessionResponseSchema, { message: { case: "welcome", value: { sessionId: `se-${message.value.workerId}` } } }));
          break;
        case "heartbeat":
          call.write(emptyAck);
          break;
        case "ready":
          if (me.credits === 0) waiting.push(me);
          me.credits += message.value.slots;
          pump();
          break;
        default:
          break;
      }
    });
    call.on("end", () => {
      close();
      call.end();
    });
    call.on("cancelled", close);
    call.on("error", close);
  },
});

server.addService(grpcServiceDefinition(RolloutService), {
  enqueueRollout: (
    call: grpc.ServerUnaryCall<EnqueueRolloutRequest, EnqueueRolloutResponse>,
    callback: grpc.sendUnaryData<EnqueueRolloutResponse>,
  ) => {
    const [rolloutId] = enqueueIds([call.request]);
    callback(null, create(EnqueueRolloutResponseSchema, { rollout: { rolloutId, status: RolloutStatus.QUEUING } }));
  },
  enqueueRollouts: (
    call: grpc.ServerUnaryCall<EnqueueRolloutsRequest, EnqueueRolloutsResponse>,
    callback: grpc.sendUnaryData<EnqueueRolloutsResponse>,
  ) => {
    const ids = enqueueIds(call.request.requests);
    callback(
      null,
      create(EnqueueRolloutsResponseSchema, { rollouts: ids.map((rolloutId) => ({ rolloutId, status: RolloutStatus.QUEUING })) }),
    );
  },
});

server.bindAsync(values["grpc-addr"], grpc.ServerCredentials.createInsecure(), (error, port) => {
  if (error) {
    console.error(`echo server: ${error.message}`);
    process.exit(1);
  }
  const address = values["grpc-addr"];
  console.log(`serving gRPC on ${address.slice(0, address.lastIndexOf(":"))}:${port}`);
});

const stop = () => {
  server.forceShutdown();
  process.exit(0);
};
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
