import { create, fromJson } from "@bufbuild/protobuf";
import type { JsonValue } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { createRunnerlineClients } from "../../src/client/clients.js";
import type { RunnerlineClients } from "../../src/client/clients.js";
import { Runner, type RunnerLogger, type RunnerOptions } from "../../src/client/runner.js";
import { SystemSnapshotSchema } from "../../src/gen/runnerline/v1/telemetry_pb.js";
import { afterEach, beforeEach } from "vitest";
import type { Rollout } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { RunnerService, type SessionRequest, type SessionResponse } from "../../src/gen/runnerline/v1/runner_pb.js";
import { grpcServiceDefinition } from "../../src/common/grpc-definition.js";
import { startServer } from "../../src/server/app.js";

export interface TestServer {
  grpcAddress: string;
  httpBaseUrl: string;
  clients: RunnerlineClients;
  close(): Promise<void>;
}

export async function startTestServer(options: { heartbeatIntervalMs?: number } = {}): Promise<TestServer> {
  const server = await startServer({
    grpcAddress: "127.0.0.1:0",
    httpAddress: "127.0.0.1:0",
    store: "memory",
    log: () => {},
    ...options,
  });
  const grpcAddress = `127.0.0.1:${server.grpcPort}`;
  return {
    grpcAddress,
    httpBaseUrl: `http://127.0.0.1:${server.httpPort}`,
    clients: createRunnerlineClients({ baseUrl: `http://${grpcAddress}` }),
    close: async () => {
      await server.close();
    },
  };
}

export async function enqueue(clients: RunnerlineClients, input: JsonValue): Promise<Rollout> {
  const { rollout } = await clients.rollouts.enqueueRollout({ input: fromJson(ValueSchema, input) });
  if (!rollout) throw new Error("enqueueRollout returned no rollout");
  return rollout;
}

export { eventually } from "../polling.js";

export const silentLogger: RunnerLogger = { debug() {}, info() {}, warn() {}, error() {} };

export { TcpRelay } from "../tcp-relay.js";

type ServerSession = grpc.ServerDuplexStream<SessionRequest, SessionResponse>;
type ClientSession = grpc.ClientDuplexStream<SessionRequest, SessionResponse>;

/**
 * A RunnerService relay between a runner and the server, on real sockets, that
 * counts the session messages going each way by kind. With `olderServer` it
 * clears the session options in Hello on the way up, so the server answers as
 * one that predates them (an older server ignores the fields it does not know).
 */
export class SessionRelay {
  /** Runner → server, by message case ("ready", "attemptUpdate", ...). */
  readonly upstream = new Map<string, number>();
  /** Server → runner, by message case ("assignment", "assignmentBatch", ...). */
  readonly downstream = new Map<string, number>();
  address = "";
  private readonly server = new grpc.Server();
  private readonly client: grpc.Client & { session(metadata: grpc.Metadata): ClientSession };

  constructor(
    target: string,
    private readonly options: { olderServer?: boolean } = {},
  ) {
    const Client = grpc.makeGenericClientConstructor(grpcServiceDefinition(RunnerService), "RunnerService");
    this.client = new Client(target, grpc.credentials.createInsecure()) as never;
    this.server.addService(grpcServiceDefinition(RunnerService), { session: (call: ServerSession) => this.relay(call) });
  }

  async start(): Promise<void> {
    const port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
    );
    this.address = `127.0.0.1:${port}`;
  }

  close(): void {
    this.server.forceShutdown();
    this.client.close();
  }

  count(direction: "upstream" | "downstream", kind: string): number {
    return this[direction].get(kind) ?? 0;
  }

  private relay(call: ServerSession): void {
    const upstream = this.client.session(call.metadata);
    const tally = (counts: Map<string, number>, kind: string | undefined) => counts.set(kind ?? "empty", (counts.get(kind ?? "empty") ?? 0) + 1);
    call.on("data", (request: SessionRequest) => {
      tally(this.upstream, request.message.case);
      if (this.options.olderServer && request.message.case === "hello") {
        request.message.value.terminalUpdateReturnsCredit = false;
        request.message.value.acceptsAssignmentBatches = false;
      }
      upstream.write(request);
    });
    call.on("end", () => upstream.end());
    call.on("cancelled", () => upstream.cancel());
    call.on("error", () => upstream.cancel());
    upstream.on("data", (response: SessionResponse) => {
      tally(this.downstream, response.message.case);
      call.write(response);
    });
    upstream.on("error", () => {});
    upstream.on("status", (status: grpc.StatusObject) => {
      if (status.code === grpc.status.OK) call.end();
      else call.emit("error", { code: status.code, details: status.details });
    });
  }
}

/**
 * A fresh server for each test, and runners made with `newRunner` (the test defaults, then `defaults`, then the
 * call's options) stopped after it. `server` is the current test's.
 */
export function serverAndRunners(defaults: Partial<RunnerOptions> = {}) {
  let current: TestServer | undefined;
  const runners: Runner[] = [];
  beforeEach(async () => {
    current = await startTestServer();
  });
  afterEach(async () => {
    await Promise.all(runners.splice(0).map((runner) => runner.stop()));
    await current?.close();
  });
  return {
    get server(): TestServer {
      if (current === undefined) throw new Error("serverAndRunners: no server outside a test");
      return current;
    },
    newRunner(options: Partial<RunnerOptions> = {}): Runner {
      const runner = new Runner({
        address: this.server.grpcAddress,
        workerId: `worker-${Math.random().toString(36).slice(2, 8)}`,
        logger: silentLogger,
        // A fixed snapshot keeps heartbeats instant; the real collector has its own tests.
        collectSnapshot: async () => create(SystemSnapshotSchema, { hostname: "test-host" }),
        ...defaults,
        ...options,
      });
      runners.push(runner);
      return runner;
    },
  };
}
