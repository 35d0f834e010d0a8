/**
 * The baseline: a bare grpc-js server on the same transport and codec as
 * Runnerline (protobuf-es via grpcServiceDefinition), with no domain logic.
 * Hello → Welcome, each Heartbeat → an empty HeartbeatAck, and for dispatch a
 * plain in-memory FIFO of rollouts (id and input) handed out over the same
 * session stream against Ready credits. It speaks the lean session options as
 * Runnerline does (a terminal update returns its credit; several assignments
 * due at once go in one AssignmentBatch), and a FAILED first attempt is queued
 * once more, so that the peer scenario's retry mode runs on it too. What it
 * sustains is the transport's limit.
 *
 *   tsx bench/echo-server.ts [--grpc-addr 127.0.0.1:0]
 */
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { grpcServiceDefinition } from "../src/common/grpc-definition.js";
import { AttemptStatus } from "../src/gen/runnerline/v1/attempt_pb.js";
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
  type Assignment,
  AssignmentSchema,
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
  /** Hello asked for it: a terminal update returns a credit, and several assignments due at once form one batch. */
  lean: boolean;
}

interface Queued {
  rolloutId: string;
  input: EnqueueRolloutRequest["input"];
  sequenceId: number;
}

const queue: Queued[] = [];
let head = 0;
let nextId = 0;
let waiting: Waiting[] = [];
const emptyAck = create(SessionResponseSchema, { message: { case: "heartbeatAck", value: {} } });

function pump(): void {
  while (waiting.length > 0 && head < queue.length) {
    const session = waiting.shift()!;
    if (!session.open || session.credits <= 0) continue;
    // Round-robin one at a time, as Runnerline's pump: a lean session's share of this pass goes out as one batch.
    const assignments: Assignment[] = [];
    do {
      assignments.push(assignmentOf(queue[head++]!));
      session.credits--;
    } while (session.lean && session.credits > 0 && head < queue.length && waiting.length === 0);
    if (session.credits > 0) waiting.push(session);
    session.call.write(
      create(SessionResponseSchema, {
        message:
          assignments.length === 1
            ? { case: "assignment", value: assignments[0]! }
            : { case: "assignmentBatch", value: { assignments } },
      }),
    );
  }
  if (head > 4096 && head * 2 > queue.length) {
    queue.splice(0, head);
    head = 0;
  }
}

/** Assigned and not yet finished, by attempt id: what a retry hands out again. */
const running = new Map<string, Queued>();

function assignmentOf(queued: Queued): Assignment {
  const { rolloutId, input, sequenceId } = queued;
  const attemptId = `at-${rolloutId}-${sequenceId}`;
  running.set(attemptId, queued);
  return create(AssignmentSchema, {
    rollout: { rolloutId, ...(input !== undefined && { input }) },
    attempt: { attemptId, rolloutId, sequenceId },
  });
}

function enqueueIds(requests: EnqueueRolloutRequest[]): string[] {
  const ids = requests.map((r) => {
    const rolloutId = r.rolloutId || `ro-${nextId++}`;
    queue.push({ rolloutId, input: r.input, sequenceId: 1 });
    return rolloutId;
  });
  pump();
  return ids;
}

/** A terminal update: a FAILED first attempt is queued once more; a lean session gets its credit back. */
function finished(me: Waiting, update: { attemptId: string; status: AttemptStatus }): void {
  const queued = running.get(update.attemptId);
  running.delete(update.attemptId);
  if (queued !== undefined && update.status === AttemptStatus.FAILED && queued.sequenceId === 1) {
    queue.push({ ...queued, sequenceId: 2 });
  }
  if (me.lean) {
    if (me.credits === 0) waiting.push(me);
    me.credits++;
  }
  pump();
}

const server = new grpc.Server({
  "grpc.max_receive_message_length": 16 * 1024 * 1024,
  "grpc.max_send_message_length": 16 * 1024 * 1024,
});

server.addService(grpcServiceDefinition(RunnerService), {
  session: (call: Call) => {
    const me: Waiting = { call, credits: 0, open: true, lean: false };
    const close = () => {
      if (!me.open) return;
      me.open = false;
      waiting = waiting.filter((w) => w !== me);
    };
    call.on("data", (request: SessionRequest) => {
      const message = request.message;
      switch (message.case) {
        case "hello":
          me.lean = message.value.terminalUpdateReturnsCredit && message.value.acceptsAssignmentBatches;
          call.write(
            create(SessionResponseSchema, {
              message: {
                case: "welcome",
                value: { sessionId: `se-${message.value.workerId}`, terminalUpdateReturnsCredit: me.lean, assignmentBatches: me.lean },
              },
            }),
          );
          break;
        case "attemptUpdate":
          if (message.value.status === AttemptStatus.SUCCEEDED || message.value.status === AttemptStatus.FAILED) finished(me, message.value);
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
