// Test-only service implementations and clients for the transport tests: the
// behaviour here exists to exercise the adapters, not the real services.
import type { DescService, MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { grpcServiceDefinition } from "../../src/common/grpc-definition.js";
import type { RunnerService, SessionRequest, SessionResponse, SessionResponseSchema } from "../../src/gen/runnerline/v1/runner_pb.js";
import type { WorkerService } from "../../src/gen/runnerline/v1/worker_pb.js";
import { peerAddressKey } from "../../src/server/transport/context.js";

export type Deferred<T> = { promise: Promise<T>; resolve(value: T): void };

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** What the handlers saw, for assertions the wire cannot show. */
export class Probe {
  /** Reason ctx.signal was aborted with, captured when it happened. */
  abortReasons: unknown[] = [];
  sessionEnded = deferred();
  unaryAborted = deferred();

  watch(ctx: HandlerContext): void {
    ctx.signal.addEventListener("abort", () => this.abortReasons.push(ctx.signal.reason), { once: true });
  }
}

/**
 * GetWorker answers by id: "missing" NOT_FOUND, "boom" a plain Error, "big" an
 * oversized reply, "headers" echoes x-echo and sets a header and a trailer,
 * "peer" the peer address, "deadline" the remaining time, "slow" waits for
 * the signal. WatchWorkers streams 3 workers, or "many:N" N large ones, or
 * fails after one with "fail". ListWorkers and SendHeartbeat are missing.
 */
export function workerImpl(probe = new Probe()): Partial<ServiceImpl<typeof WorkerService>> {
  return {
    async getWorker(request, ctx) {
      probe.watch(ctx);
      switch (request.workerId) {
        case "missing":
          throw new ConnectError(`worker "missing" not found`, Code.NotFound, { "x-reason": "test" });
        case "boom":
          throw new Error("secret internal detail");
        case "big":
          return { worker: { workerId: "x".repeat(100_000) } };
        case "headers":
          ctx.responseHeader.set("x-answer", "42");
          ctx.responseTrailer.set("x-trailer", "t");
          return { worker: { workerId: ctx.requestHeader.get("x-echo") ?? "" } };
        case "peer":
          return { worker: { workerId: ctx.values.get(peerAddressKey) } };
        case "deadline":
          return { worker: { workerId: String(ctx.timeoutMs() ?? "none") } };
        case "slow":
          await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
          probe.unaryAborted.resolve();
          throw ctx.signal.reason;
        default:
          return { worker: { workerId: request.workerId } };
      }
    },
    async *watchWorkers(request, ctx) {
      probe.watch(ctx);
      const many = /^many:(\d+)$/.exec(request.workerIdContains);
      if (many) {
        const padding = "p".repeat(10_000);
        for (let i = 0; i < Number(many[1]); i++) {
          yield { worker: { workerId: `${i}:${padding}` } };
        }
        return;
      }
      for (let i = 0; i < 3; i++) {
        yield { worker: { workerId: `w${i}` }, initial: i === 0 };
        if (request.workerIdContains === "fail") {
          throw new ConnectError("watch broke", Code.Aborted);
        }
      }
    },
  };
}

/** Heartbeat sequences the test session fails on, out of the way of counting tests. */
export const failingSequence = 1_000_013n;
export const crashingSequence = 1_000_666n;

/**
 * Session echoes each Heartbeat as a HeartbeatAck with its sequence;
 * `failingSequence` fails with FAILED_PRECONDITION, `crashingSequence` with a
 * plain Error. After the client
 * half-closes it sends one Drain and ends; Goodbye ends it at once.
 */
export function runnerImpl(probe = new Probe()): Partial<ServiceImpl<typeof RunnerService>> {
  return {
    async *session(requests, ctx): AsyncGenerator<MessageInitShape<typeof SessionResponseSchema>> {
      probe.watch(ctx);
      try {
        for await (const request of requests) {
          switch (request.message.case) {
            case "heartbeat": {
              const sequence = request.message.value.sequence;
              if (sequence === failingSequence) {
                throw new ConnectError("unlucky beat", Code.FailedPrecondition);
              }
              if (sequence === crashingSequence) {
                throw new Error("kaboom");
              }
              yield { message: { case: "heartbeatAck", value: { sequence } } };
              break;
            }
            case "goodbye":
              return;
          }
        }
        yield { message: { case: "drain", value: {} } };
      } finally {
        probe.sessionEnded.resolve();
      }
    },
  };
}

/** What makeGenericClientConstructor builds (grpc-js does not export the type's name). */
export type GenericClient = InstanceType<grpc.ServiceClientConstructor>;

export const clientOptions: grpc.ChannelOptions = { "grpc.use_local_subchannel_pool": 1 };

/** A grpc-js client built the way the runner SDK builds its own. */
export function grpcClient(service: DescService, port: number, options: grpc.ChannelOptions = {}): GenericClient {
  const Client = grpc.makeGenericClientConstructor(grpcServiceDefinition(service), service.name);
  return new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { ...clientOptions, ...options });
}

export type UnaryResult<T> = { response: T; header: grpc.Metadata; trailer: grpc.Metadata };

/** Call a unary method of a generic grpc-js client, resolving with what came back. */
export function grpcUnary<T>(
  client: GenericClient,
  method: string,
  request: unknown,
  metadata = new grpc.Metadata(),
  options: grpc.CallOptions = {},
): Promise<UnaryResult<T>> {
  return new Promise((resolve, reject) => {
    let header = new grpc.Metadata();
    let response: T | undefined;
    const fn = client[method] as (...args: unknown[]) => grpc.ClientUnaryCall;
    const call = fn.call(client, request, metadata, options, (error: grpc.ServiceError | null, value: T) => {
      if (error) {
        reject(error);
      } else {
        response = value;
      }
    });
    call.on("metadata", (received: grpc.Metadata) => (header = received));
    call.on("status", (status: grpc.StatusObject) => {
      if (status.code === grpc.status.OK) {
        resolve({ response: response as T, header, trailer: status.metadata });
      }
    });
  });
}

/** The status a failed grpc-js call ended with. */
export async function grpcError(promise: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await promise;
  } catch (error) {
    return error as grpc.ServiceError;
  }
  throw new Error("expected the call to fail");
}

export type SessionCall = grpc.ClientDuplexStream<Partial<SessionRequest>, SessionResponse>;

/** Collect a stream's messages and its final status. */
export function drainStream<T>(call: grpc.ClientReadableStream<T> | grpc.ClientDuplexStream<unknown, T>): Promise<{
  messages: T[];
  status: grpc.StatusObject;
}> {
  return new Promise((resolve) => {
    const messages: T[] = [];
    call.on("data", (message: T) => messages.push(message));
    call.on("error", () => undefined);
    call.on("status", (status: grpc.StatusObject) => resolve({ messages, status }));
  });
}

export type StreamReader<T> = { next(): Promise<T>; status: Promise<grpc.StatusObject> };

/**
 * Read a client stream message by message. One 'data' listener for the whole
 * call, so nothing arrives while no one is listening.
 */
export function streamReader<T>(call: grpc.ClientDuplexStream<unknown, T> | grpc.ClientReadableStream<T>): StreamReader<T> {
  const buffered: T[] = [];
  const waiting: ((message: T) => void)[] = [];
  call.on("data", (message: T) => {
    const waiter = waiting.shift();
    if (waiter) {
      waiter(message);
    } else {
      buffered.push(message);
    }
  });
  call.on("error", () => undefined);
  const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
  return {
    next: () => (buffered.length > 0 ? Promise.resolve(buffered.shift() as T) : new Promise((resolve) => waiting.push(resolve))),
    status,
  };
}
