import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRunnerlineClients, type RunnerlineClients } from "../../src/client/clients.js";
import { AttemptService, AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutService } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { type SessionRequest, SessionRequestSchema } from "../../src/gen/runnerline/v1/runner_pb.js";
import { WorkerService } from "../../src/gen/runnerline/v1/worker_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { parseTokenTable } from "../../src/server/auth/tokens.js";
import { TOKENS, writeAuthFile } from "./tokens.js";

const SERVICES: DescService[] = [WorkerService, RolloutService, AttemptService];
type Who = "none" | "bogus" | keyof typeof TOKENS;
const WHO: Who[] = ["none", "bogus", "runner", "operator", "admin"];
const READS = /^(Get|List|Watch|Wait)[A-Z]/;
/** Fleet maintenance an operator may do besides reading. */
const OPERATE_METHODS = new Set(["CordonWorker", "UncordonWorker", "DrainWorker"]);
/** The runner's methods (its token may call them as a gpu-* worker). */
const RUNNER_METHODS = new Set(["SendHeartbeat", "DequeueRollout", "UpdateAttempt"]);

let server: RunningServer;
let admin: RunnerlineClients;
/** An attempt held by gpu-1 (the runner token's) and one held by cpu-1 (not its). */
let ownAttempt: string;
let otherAttempt: string;
const denials: string[] = [];

beforeAll(async () => {
  server = await startServer({
    grpcAddress: "127.0.0.1:0",
    httpAddress: "127.0.0.1:0",
    store: "memory",
    authFile: writeAuthFile(),
    log: (line) => line.startsWith("auth: denied") && denials.push(line),
  });
  admin = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${server.grpcPort}`, security: { token: TOKENS.admin } });
  await admin.rollouts.enqueueRollouts({ requests: [{}, {}] });
  ownAttempt = (await admin.rollouts.dequeueRollout({ workerId: "gpu-1" })).attempt!.attemptId;
  otherAttempt = (await admin.rollouts.dequeueRollout({ workerId: "cpu-1" })).attempt!.attemptId;
});

afterAll(async () => {
  await server.close();
});

function transportFor(port: "grpc" | "http", who: Who): Transport {
  const token = who === "none" ? undefined : who === "bogus" ? "not-a-token" : TOKENS[who];
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  const common = { interceptors: [(next: any) => (req: any) => { for (const [k, v] of Object.entries(headers)) req.header.set(k, v); return next(req); }] };
  return port === "grpc"
    ? createGrpcTransport({ baseUrl: `http://127.0.0.1:${server.grpcPort}`, ...common })
    : createConnectTransport({ baseUrl: `http://127.0.0.1:${server.httpPort}`, httpVersion: "1.1", ...common });
}

/** A request that passes validation where the method needs one (worker methods name gpu-1, the runner's). */
function requestFor(method: DescMethod): Record<string, unknown> {
  switch (method.name) {
    case "SendHeartbeat":
    case "DequeueRollout":
      return { workerId: "gpu-1" };
    case "UpdateAttempt":
      return { attemptId: ownAttempt, status: AttemptStatus.RUNNING };
    case "WaitRollouts":
      return { rolloutIds: ["ro-unknown"], timeout: { seconds: 0n } };
    default:
      return {};
  }
}

/** The call's outcome: its error code, or OK. A server stream counts as OK once it opens without an error. */
async function outcome(transport: Transport, service: DescService, method: DescMethod): Promise<Code | "ok"> {
  const client = createClient(service, transport) as unknown as Record<string, (req: unknown, opts?: unknown) => unknown>;
  const fn = client[method.localName]!;
  try {
    if (method.methodKind === "server_streaming") {
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), 300);
      try {
        for await (const _ of fn(requestFor(method), { signal: abort.signal }) as AsyncIterable<unknown>) break;
      } finally {
        clearTimeout(timer);
      }
      return "ok";
    }
    await fn(requestFor(method));
    return "ok";
  } catch (error) {
    const code = ConnectError.from(error).code;
    return code === Code.Canceled ? "ok" : code;
  }
}

function expected(who: Who, method: DescMethod): "allowed" | Code {
  if (who === "none" || who === "bogus") return Code.Unauthenticated;
  if (who === "admin") return "allowed";
  if (who === "operator") return READS.test(method.name) || OPERATE_METHODS.has(method.name) ? "allowed" : Code.PermissionDenied;
  return RUNNER_METHODS.has(method.name) ? "allowed" : Code.PermissionDenied;
}

describe.each(["grpc", "http"] as const)("role × RPC matrix on the %s port", (port) => {
  const rows = SERVICES.flatMap((service) => service.methods.map((method) => [`${service.name}.${method.name}`, service, method] as const));
  it.each(rows)("%s", async (_name, service, method) => {
    for (const who of WHO) {
      const got = await outcome(transportFor(port, who), service, method);
      const want = expected(who, method);
      if (want === "allowed") {
        expect([Code.Unauthenticated, Code.PermissionDenied], `${who} on ${method.name}`).not.toContain(got);
      } else {
        expect(got, `${who} on ${method.name}`).toBe(want);
      }
    }
  });
});

describe("the runner session stream", () => {
  /** Opens a session as `workerId` with `token`; resolves with the first answer kind or the status code. */
  function openSession(token: string | undefined, workerId: string): Promise<string | number> {
    const Client = grpc.makeGenericClientConstructor(
      {
        Session: {
          path: "/runnerline.v1.RunnerService/Session",
          requestStream: true,
          responseStream: true,
          requestSerialize: (m: SessionRequest) => Buffer.from(toBinarySession(m)),
          requestDeserialize: () => undefined,
          responseSerialize: () => Buffer.alloc(0),
          responseDeserialize: (b: Buffer) => b,
        },
      } as never,
      "RunnerService",
    );
    const client = new Client(`127.0.0.1:${server.grpcPort}`, grpc.credentials.createInsecure());
    const metadata = new grpc.Metadata();
    if (token) metadata.set("authorization", `Bearer ${token}`);
    const call = (client as unknown as { Session(m: grpc.Metadata): grpc.ClientDuplexStream<SessionRequest, Buffer> }).Session(metadata);
    call.write(create(SessionRequestSchema, { message: { case: "hello", value: { workerId } } }));
    return new Promise((resolve) => {
      call.on("data", () => {
        resolve("welcome");
        call.cancel();
        client.close();
      });
      call.on("error", (error: grpc.ServiceError) => {
        resolve(error.code);
        client.close();
      });
    });
  }

  it.each([
    ["no token", undefined, "gpu-7", grpc.status.UNAUTHENTICATED],
    ["an unknown token", "nope", "gpu-7", grpc.status.UNAUTHENTICATED],
    ["the runner token as a matching worker", TOKENS.runner, "gpu-7", "welcome"],
    ["the runner token as another worker", TOKENS.runner, "cpu-7", grpc.status.PERMISSION_DENIED],
    ["the operator token", TOKENS.operator, "gpu-8", grpc.status.PERMISSION_DENIED],
    ["the admin token as any worker", TOKENS.admin, "cpu-8", "welcome"],
  ])("%s", async (_name, token, workerId, want) => {
    expect(await openSession(token, workerId)).toBe(want);
  });
});

describe("operator scope", () => {
  const operator = () => createRunnerlineClients({ baseUrl: `http://127.0.0.1:${server.grpcPort}`, security: { token: TOKENS.operator } });

  it("may cordon and uncordon a worker, recorded with the token's name; may not release or cancel", async () => {
    const { worker } = await operator().workers.cordonWorker({ workerId: "gpu-1", reason: "maintenance" });
    expect(worker).toMatchObject({ cordoned: true, cordonedBy: "dashboard", cordonReason: "maintenance" });
    expect((await operator().workers.uncordonWorker({ workerId: "gpu-1" })).worker?.cordoned).toBe(false);
    const error = await operator().workers.releaseWorker({ workerId: "gpu-1" }).catch(ConnectError.from);
    expect((error as ConnectError).rawMessage).toMatch(/role operator, which may only call read-only queries.*cordon, uncordon or drain workers; WorkerService.ReleaseWorker/);
  });

  it("a runner token may not cordon, not even its own worker", async () => {
    const runner = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${server.grpcPort}`, security: { token: TOKENS.runner } });
    await expect(runner.workers.cordonWorker({ workerId: "gpu-1" })).rejects.toMatchObject({ code: Code.PermissionDenied });
  });
});

describe("runner scope", () => {
  const runner = () => createRunnerlineClients({ baseUrl: `http://127.0.0.1:${server.grpcPort}`, security: { token: TOKENS.runner } });

  it("may not act as another worker", async () => {
    const error = await runner().workers.sendHeartbeat({ workerId: "cpu-1" }).catch(ConnectError.from);
    expect(error).toMatchObject({ code: Code.PermissionDenied });
    expect((error as ConnectError).rawMessage).toContain('token "gpu-fleet" has role runner');
    expect((error as ConnectError).rawMessage).toContain('act as worker "cpu-1"');
    await expect(runner().rollouts.dequeueRollout({ workerId: "cpu-1" })).rejects.toMatchObject({ code: Code.PermissionDenied });
  });

  it("may not report another worker's attempt", async () => {
    const error = await runner().attempts.updateAttempt({ attemptId: otherAttempt, status: AttemptStatus.RUNNING }).catch(ConnectError.from);
    expect(error).toMatchObject({ code: Code.PermissionDenied });
    expect((error as ConnectError).rawMessage).toContain('held by worker "cpu-1"');
    expect((await admin.attempts.getAttempt({ attemptId: otherAttempt })).attempt?.status).toBe(AttemptStatus.PREPARING);
  });

  it("gets INVALID_ARGUMENT, not PERMISSION_DENIED, for a missing worker id", async () => {
    await expect(runner().workers.sendHeartbeat({ workerId: "" })).rejects.toMatchObject({ code: Code.InvalidArgument });
  });

  it("may not enqueue, and the message names the role and what it may do", async () => {
    const error = await runner().rollouts.enqueueRollout({}).catch(ConnectError.from);
    expect(error).toMatchObject({ code: Code.PermissionDenied });
    expect((error as ConnectError).rawMessage).toMatch(/role runner, which may only open runner sessions.*EnqueueRollout/);
  });

  it("denials are logged with the token's name, never the token", () => {
    expect(denials.length).toBeGreaterThan(0);
    for (const line of denials) for (const token of Object.values(TOKENS)) expect(line).not.toContain(token);
  });
});

describe("open endpoints", () => {
  it("gRPC health answers without a token", async () => {
    const { HealthClient } = await healthClient();
    const status = await new Promise<number>((resolve, reject) =>
      new HealthClient(`127.0.0.1:${server.grpcPort}`, grpc.credentials.createInsecure()).Check({ service: "" }, (error: Error | null, reply: { status: number }) =>
        error ? reject(error) : resolve(reply.status),
      ),
    );
    expect(status).toBe(1);
  });

  it("server reflection answers without a token", async () => {
    const protoLoader = await import("@grpc/proto-loader");
    const root = new URL("../../src/server/transport/protos", import.meta.url).pathname;
    const definition = protoLoader.loadSync("grpc/reflection/v1/reflection.proto", { includeDirs: [root], keepCase: true });
    const loaded = grpc.loadPackageDefinition(definition) as any;
    const client = new loaded.grpc.reflection.v1.ServerReflection(`127.0.0.1:${server.grpcPort}`, grpc.credentials.createInsecure());
    const call = client.ServerReflectionInfo();
    const answer = await new Promise<{ list_services_response?: { service: { name: string }[] } }>((resolve, reject) => {
      call.on("data", resolve);
      call.on("error", reject);
      call.write({ host: "", list_services: "*" });
    });
    call.end();
    client.close();
    expect(answer.list_services_response?.service.map((s) => s.name)).toContain("runnerline.v1.RolloutService");
  });

  it("GET /healthz answers without a token", async () => {
    expect((await fetch(`http://127.0.0.1:${server.httpPort}/healthz`)).status).toBe(200);
  });
});

describe("the auth file", () => {
  it.each([
    ["no tokens list", {}, /top-level "tokens"/],
    ["an unknown role", { tokens: [{ name: "a", role: "root", sha256: "a".repeat(64) }] }, /role must be one of/],
    ["a token in clear", { tokens: [{ name: "a", role: "admin", sha256: "secret" }] }, /64 hex digits/],
    ["a runner without workers", { tokens: [{ name: "a", role: "runner", sha256: "a".repeat(64) }] }, /workers must list/],
    ["workers on an operator", { tokens: [{ name: "a", role: "operator", sha256: "a".repeat(64), workers: ["*"] }] }, /runner tokens only/],
    ["an unknown field", { tokens: [{ name: "a", role: "admin", sha256: "a".repeat(64), token: "x" }] }, /unknown field "token"/],
  ])("refuses %s", (_name, document, message) => {
    expect(() => parseTokenTable(document)).toThrow(message);
  });

  it("matches worker globs exactly", () => {
    const table = parseTokenTable({ tokens: [{ name: "r", role: "runner", sha256: "b".repeat(64), workers: ["gpu-*", "cpu-?"] }] });
    const principal = table.get("b".repeat(64))!;
    expect(["gpu-1", "gpu-", "cpu-1"].map((w) => principal.mayActAs(w))).toEqual([true, true, true]);
    expect(["xgpu-1", "cpu-12", "gpu.1"].map((w) => principal.mayActAs(w))).toEqual([false, false, false]);
  });
});

describe("exposure without tokens", () => {
  it("refuses to listen beyond loopback without an auth file", async () => {
    await expect(startServer({ grpcAddress: "0.0.0.0:0", httpAddress: "127.0.0.1:0", store: "memory", log: () => {} })).rejects.toThrow(
      /refusing to listen on 0\.0\.0\.0:0 without authentication/,
    );
  });

  it("starts with --insecure-no-auth and warns", async () => {
    const lines: string[] = [];
    const open = await startServer({
      grpcAddress: "0.0.0.0:0",
      httpAddress: "127.0.0.1:0",
      store: "memory",
      insecureNoAuth: true,
      log: (line) => lines.push(line),
    });
    await open.close();
    expect(lines.some((line) => line.startsWith("WARNING: listening on 0.0.0.0:0 without authentication"))).toBe(true);
  });
});

async function healthClient() {
  const protoLoader = await import("@grpc/proto-loader");
  const { createRequire } = await import("node:module");
  const require = createRequire(import.meta.url);
  const path = require.resolve("grpc-health-check/proto/health/v1/health.proto");
  const definition = protoLoader.loadSync(path);
  const loaded = grpc.loadPackageDefinition(definition) as any;
  return { HealthClient: loaded.grpc.health.v1.Health };
}

function toBinarySession(message: SessionRequest): Uint8Array {
  return toBinary(SessionRequestSchema, message);
}
import { toBinary } from "@bufbuild/protobuf";
