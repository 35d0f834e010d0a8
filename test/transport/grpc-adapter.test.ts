import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import {
  HeartbeatSchema,
  RunnerService,
  SessionRequestSchema,
  type SessionRequest,
  type SessionResponse,
} from "../../src/gen/runnerline/v1/runner_pb.js";
import {
  GetWorkerRequestSchema,
  ListWorkersRequestSchema,
  WatchWorkersRequestSchema,
  WorkerService,
  type GetWorkerResponse,
  type WatchWorkersResponse,
} from "../../src/gen/runnerline/v1/worker_pb.js";
import { startGrpcServer, type GrpcServer } from "../../src/server/transport/grpc-server.js";
import {
  Probe,
  crashingSequence,
  deferred,
  failingSequence,
  drainStream,
  grpcClient,
  grpcError,
  grpcUnary,
  runnerImpl,
  streamReader,
  workerImpl,
  type GenericClient,
} from "./fixtures.js";

const getWorker = (workerId: string) => create(GetWorkerRequestSchema, { workerId });
const heartbeat = (sequence: bigint): SessionRequest =>
  create(SessionRequestSchema, { message: { case: "heartbeat", value: create(HeartbeatSchema, { sequence }) } });
const goodbye = (): SessionRequest => create(SessionRequestSchema, { message: { case: "goodbye", value: {} } });

describe("grpc adapter", () => {
  let server: GrpcServer;
  let probe: Probe;
  let workers: GenericClient;
  let runners: GenericClient;

  beforeAll(async () => {
    probe = new Probe();
    server = await startGrpcServer({
      address: "127.0.0.1:0",
      maxMessageBytes: 64 * 1024,
      services: [
        { service: WorkerService, impl: workerImpl(probe) },
        { service: RunnerService, impl: runnerImpl(probe) },
      ],
    });
    workers = grpcClient(WorkerService, server.port);
    runners = grpcClient(RunnerService, server.port);
  });
  afterAll(async () => {
    workers.close();
    runners.close();
    await server.shutdown(100);
  });
  afterEach(() => {
    vi.restoreAllMocks();
  });

  describe("unary", () => {
    it("answers with the handler's message, built from an init object", async () => {
      const { response } = await grpcUnary<GetWorkerResponse>(workers, "getWorker", getWorker("w-1"));
      expect(response.worker?.workerId).toBe("w-1");
    });

    it("maps a ConnectError to the same status code, message and metadata", async () => {
      const error = await grpcError(grpcUnary(workers, "getWorker", getWorker("missing")));
      expect(error.code).toBe(grpc.status.NOT_FOUND);
      expect(error.details).toBe(`worker "missing" not found`);
      expect(error.metadata.get("x-reason")).toEqual(["test"]);
    });

    it("hides a plain error behind INTERNAL and logs it once with the method", async () => {
      const log = vi.spyOn(console, "error").mockImplementation(() => undefined);
      const error = await grpcError(grpcUnary(workers, "getWorker", getWorker("boom")));
      expect(error.code).toBe(grpc.status.INTERNAL);
      expect(error.details).not.toContain("secret");
      expect(log).toHaveBeenCalledTimes(1);
      expect(String(log.mock.calls[0]?.[0])).toContain("/runnerline.v1.WorkerService/GetWorker");
    });

    it("answers UNIMPLEMENTED for a method the impl leaves out", async () => {
      const error = await grpcError(grpcUnary(workers, "listWorkers", create(ListWorkersRequestSchema)));
      expect(error.code).toBe(grpc.status.UNIMPLEMENTED);
      expect(error.details).toContain("runnerline.v1.WorkerService.ListWorkers");
    });

    it("passes request metadata in and response headers and trailers out", async () => {
      const metadata = new grpc.Metadata();
      metadata.set("x-echo", "hello");
      const { response, header, trailer } = await grpcUnary<GetWorkerResponse>(
        workers,
        "getWorker",
        getWorker("headers"),
        metadata,
      );
      expect(response.worker?.workerId).toBe("hello");
      expect(header.get("x-answer")).toEqual(["42"]);
      expect(trailer.get("x-trailer")).toEqual(["t"]);
    });

    it("exposes the peer address and the deadline", async () => {
      const peer = await grpcUnary<GetWorkerResponse>(workers, "getWorker", getWorker("peer"));
      expect(peer.response.worker?.workerId).toBe("127.0.0.1");
      const none = await grpcUnary<GetWorkerResponse>(workers, "getWorker", getWorker("deadline"));
      expect(none.response.worker?.workerId).toBe("none");
      const timed = await grpcUnary<GetWorkerResponse>(workers, "getWorker", getWorker("deadline"), undefined, {
        deadline: Date.now() + 5000,
      });
      const remaining = Number(timed.response.worker?.workerId);
      expect(remaining).toBeGreaterThan(3000);
      expect(remaining).toBeLessThanOrEqual(5000);
    });

    it("aborts the handler's signal when the client cancels", async () => {
      const before = probe.abortReasons.length;
      const fn = workers["getWorker"] as (...args: unknown[]) => grpc.ClientUnaryCall;
      const call = fn.call(workers, getWorker("slow"), () => undefined);
      await new Promise((resolve) => setTimeout(resolve, 50));
      call.cancel();
      await probe.unaryAborted.promise;
      const reason = probe.abortReasons[before];
      expect(reason).toBeInstanceOf(ConnectError);
      expect((reason as ConnectError).code).toBe(Code.Canceled);
    });

    it("rejects oversize requests and replies with RESOURCE_EXHAUSTED", async () => {
      const tooBig = await grpcError(grpcUnary(workers, "getWorker", getWorker("y".repeat(100_000))));
      expect(tooBig.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      const replyTooBig = await grpcError(grpcUnary(workers, "getWorker", getWorker("big")));
      expect(replyTooBig.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    });
  });

  describe("server streaming", () => {
    it("streams every message, then OK", async () => {
      const call = (workers["watchWorkers"] as (r: unknown) => grpc.ClientReadableStream<WatchWorkersResponse>)(
        create(WatchWorkersRequestSchema),
      );
      const { messages, status } = await drainStream(call);
      expect(messages.map((m) => m.worker?.workerId)).toEqual(["w0", "w1", "w2"]);
      expect(messages[0]?.initial).toBe(true);
      expect(status.code).toBe(grpc.status.OK);
    });

    it("ends with the handler's error after what it sent", async () => {
      const call = (workers["watchWorkers"] as (r: unknown) => grpc.ClientReadableStream<WatchWorkersResponse>)(
        create(WatchWorkersRequestSchema, { workerIdContains: "fail" }),
      );
      const { messages, status } = await drainStream(call);
      expect(messages).toHaveLength(1);
      expect(status.code).toBe(grpc.status.ABORTED);
      expect(status.details).toBe("watch broke");
    });

    it("waits for a slow reader instead of buffering without bound", async () => {
      // 500 x 10 KB is far past grpc-js's and HTTP/2's buffers: the writer must
      // honour write() === false and wait for 'drain'.
      const call = (workers["watchWorkers"] as (r: unknown) => grpc.ClientReadableStream<WatchWorkersResponse>)(
        create(WatchWorkersRequestSchema, { workerIdContains: "many:500" }),
      );
      const seen: number[] = [];
      call.on("data", (message: WatchWorkersResponse) => {
        seen.push(Number(message.worker?.workerId.split(":")[0]));
        if (seen.length % 100 === 0) {
          call.pause();
          setTimeout(() => call.resume(), 20);
        }
      });
      const status = await new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
      expect(status.code).toBe(grpc.status.OK);
      expect(seen).toEqual(Array.from({ length: 500 }, (_, i) => i));
    });
  });

  describe("bidi session", () => {
    const openSession = () =>
      (runners["session"] as () => grpc.ClientDuplexStream<SessionRequest, SessionResponse>)();

    it("acks each heartbeat with its sequence, and ends after the client half-closes", async () => {
      const call = openSession();
      const reader = streamReader(call);
      for (const sequence of [1n, 2n, 3n]) {
        call.write(heartbeat(sequence));
        const ack = await reader.next();
        expect(ack.message.case).toBe("heartbeatAck");
        expect(ack.message.value).toMatchObject({ sequence });
      }
      call.end();
      const drain = await reader.next();
      expect(drain.message.case).toBe("drain");
      expect((await reader.status).code).toBe(grpc.status.OK);
    });

    it("ends with OK when the handler returns while the client still sends", async () => {
      const call = openSession();
      const { messages, status } = await new Promise<Awaited<ReturnType<typeof drainStream<SessionResponse>>>>(
        (resolve) => {
          void drainStream(call).then(resolve);
          call.write(heartbeat(1n));
          call.write(goodbye());
        },
      );
      expect(messages).toHaveLength(1);
      expect(status.code).toBe(grpc.status.OK);
      call.end();
    });

    it("aborts ctx.signal and stops the handler when the client cancels", async () => {
      const ended = (probe.sessionEnded = deferred());
      const before = probe.abortReasons.length;
      const call = openSession();
      const reader = streamReader(call);
      call.write(heartbeat(1n));
      await reader.next();
      call.cancel();
      await ended.promise;
      expect((await reader.status).code).toBe(grpc.status.CANCELLED);
      const reason = probe.abortReasons[before];
      expect(reason).toBeInstanceOf(ConnectError);
      expect((reason as ConnectError).code).toBe(Code.Canceled);
    });

    it("delivers an error thrown mid-stream as the status", async () => {
      const call = openSession();
      const reader = streamReader(call);
      call.write(heartbeat(1n));
      await reader.next();
      call.write(heartbeat(failingSequence));
      const status = await reader.status;
      expect(status.code).toBe(grpc.status.FAILED_PRECONDITION);
      expect(status.details).toBe("unlucky beat");
    });

    it("turns a plain error mid-stream into INTERNAL", async () => {
      const log = vi.spyOn(console, "error").mockImplementation(() => undefined);
      const call = openSession();
      const { status } = await new Promise<Awaited<ReturnType<typeof drainStream<SessionResponse>>>>((resolve) => {
        void drainStream(call).then(resolve);
        call.write(heartbeat(crashingSequence));
      });
      expect(status.code).toBe(grpc.status.INTERNAL);
      expect(log).toHaveBeenCalledTimes(1);
      expect(String(log.mock.calls[0]?.[0])).toContain("/runnerline.v1.RunnerService/Session");
    });

    it("keeps order over many messages", async () => {
      const call = openSession();
      const reader = streamReader(call);
      const count = 2000;
      for (let i = 1; i <= count; i++) {
        call.write(heartbeat(BigInt(i)));
      }
      call.end();
      for (let i = 1; i <= count; i++) {
        const ack = await reader.next();
        expect(ack.message.value).toMatchObject({ sequence: BigInt(i) });
      }
      expect((await reader.next()).message.case).toBe("drain");
      expect((await reader.status).code).toBe(grpc.status.OK);
    });
  });

  describe("with a Connect gRPC client", () => {
    const transport = () => createGrpcTransport({ baseUrl: `http://127.0.0.1:${server.port}` });

    it("gets the same answers and codes", async () => {
      const client = createClient(WorkerService, transport());
      expect((await client.getWorker({ workerId: "w-2" })).worker?.workerId).toBe("w-2");
      await expect(client.getWorker({ workerId: "missing" })).rejects.toMatchObject({
        code: Code.NotFound,
        rawMessage: `worker "missing" not found`,
      });
      vi.spyOn(console, "error").mockImplementation(() => undefined);
      await expect(client.getWorker({ workerId: "boom" })).rejects.toMatchObject({ code: Code.Internal });
      await expect(client.listWorkers({})).rejects.toMatchObject({ code: Code.Unimplemented });
      const ids: string[] = [];
      for await (const message of client.watchWorkers({})) {
        ids.push(message.worker?.workerId ?? "");
      }
      expect(ids).toEqual(["w0", "w1", "w2"]);
    });

    it("runs a bidi session", async () => {
      const client = createClient(RunnerService, transport());
      async function* requests() {
        for (let i = 1n; i <= 5n; i++) {
          yield heartbeat(i);
        }
      }
      const received: string[] = [];
      for await (const response of client.session(requests())) {
        received.push(
          response.message.case === "heartbeatAck" ? String(response.message.value.sequence) : String(response.message.case),
        );
      }
      expect(received).toEqual(["1", "2", "3", "4", "5", "drain"]);
    });
  });
});

describe("grpc adapter interceptors", () => {
  let server: GrpcServer;
  const seen: string[] = [];
  const auth: Interceptor = (next) => async (req) => {
    seen.push(`${req.method.name}:${req.stream ? "stream" : "unary"}`);
    if (req.header.get("authorization") !== "Bearer ok") {
      throw new ConnectError("missing or bad token", Code.Unauthenticated);
    }
    const res = await next(req);
    res.header.set("x-intercepted", "yes");
    return res;
  };

  beforeAll(async () => {
    server = await startGrpcServer({
      address: "127.0.0.1:0",
      interceptors: [auth],
      services: [
        { service: WorkerService, impl: workerImpl() },
        { service: RunnerService, impl: runnerImpl() },
      ],
    });
  });
  afterAll(() => server.shutdown(100));

  it("wrap unary and streaming handlers, including missing ones", async () => {
    const client = createClient(WorkerService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${server.port}` }));
    await expect(client.getWorker({ workerId: "a" })).rejects.toMatchObject({ code: Code.Unauthenticated });
    await expect(client.listWorkers({})).rejects.toMatchObject({ code: Code.Unauthenticated });
    const headers = { authorization: "Bearer ok" };
    let header: Headers | undefined;
    const answer = await client.getWorker({ workerId: "a" }, { headers, onHeader: (h) => (header = h) });
    expect(answer.worker?.workerId).toBe("a");
    expect(header?.get("x-intercepted")).toBe("yes");
    await expect(client.listWorkers({}, { headers })).rejects.toMatchObject({ code: Code.Unimplemented });
    const ids: string[] = [];
    for await (const message of client.watchWorkers({}, { headers })) {
      ids.push(message.worker?.workerId ?? "");
    }
    expect(ids).toEqual(["w0", "w1", "w2"]);
    expect(seen).toEqual([
      "GetWorker:unary",
      "ListWorkers:unary",
      "GetWorker:unary",
      "ListWorkers:unary",
      "WatchWorkers:stream",
    ]);
  });

  it("wrap a bidi session once, not per message", async () => {
    seen.length = 0;
    const runners = createClient(RunnerService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${server.port}` }));
    async function* requests() {
      yield heartbeat(1n);
      yield heartbeat(2n);
    }
    const kinds: string[] = [];
    for await (const response of runners.session(requests(), { headers: { authorization: "Bearer ok" } })) {
      kinds.push(String(response.message.case));
    }
    expect(kinds).toEqual(["heartbeatAck", "heartbeatAck", "drain"]);
    expect(seen).toEqual(["Session:stream"]);
  });
});
