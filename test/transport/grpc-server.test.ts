import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { create, createFileRegistry, fromBinary, type DescMethod, type DescService } from "@bufbuild/protobuf";
import {
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
  ServiceDescriptorProtoSchema,
  type FileDescriptorProto,
} from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { protoPath as healthProtoPath } from "grpc-health-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AttemptService } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RunnerService } from "../../src/gen/runnerline/v1/runner_pb.js";
import { WorkerService } from "../../src/gen/runnerline/v1/worker_pb.js";
import { startGrpcServer, type GrpcServer } from "../../src/server/transport/grpc-server.js";
import { clientOptions, runnerImpl, workerImpl } from "./fixtures.js";

type Loaded = Record<string, unknown>;
type ServiceConstructor = new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => grpc.Client &
  Record<string, (...args: unknown[]) => unknown>;

/** A client class for a service from a .proto, walked out of proto-loader's nested namespaces. */
function clientFor(file: string, includeDirs: string[], serviceName: string): ServiceConstructor {
  const loaded = grpc.loadPackageDefinition(
    protoLoader.loadSync(file, { includeDirs, keepCase: true, longs: String, enums: String, defaults: true, oneofs: true }),
  );
  let node: unknown = loaded;
  for (const part of serviceName.split(".")) {
    node = (node as Loaded)[part];
  }
  return node as ServiceConstructor;
}

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const reflectionProtoDir = path.join(repoRoot, "src/server/transport/protos");
const healthProtoDir = path.resolve(path.dirname(healthProtoPath), "../..");

type ReflectionResponse = {
  list_services_response?: { service: { name: string }[] };
  file_descriptor_response?: { file_descriptor_proto: Buffer[] };
  all_extension_numbers_response?: { base_type_name: string; extension_number: number[] };
  error_response?: { error_code: number; error_message: string };
};

type ReflectionClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

/** One ServerReflectionInfo stream, asked one question at a time, as grpcurl uses it. */
function openReflection(client: ReflectionClient): { ask(request: object): Promise<ReflectionResponse>; close(): void } {
  const call = client["ServerReflectionInfo"]?.() as grpc.ClientDuplexStream<object, ReflectionResponse>;
  const waiting: { resolve(response: ReflectionResponse): void; reject(error: Error): void }[] = [];
  call.on("data", (response: ReflectionResponse) => waiting.shift()?.resolve(response));
  call.on("error", (error: Error) => waiting.splice(0).forEach(({ reject }) => reject(error)));
  return {
    ask: (request) =>
      new Promise((resolve, reject) => {
        waiting.push({ resolve, reject });
        call.write({ host: "", ...request });
      }),
    close: () => call.end(),
  };
}

/** One request/response exchange on its own reflection stream. */
async function reflect(client: ReflectionClient, request: object): Promise<ReflectionResponse> {
  const stream = openReflection(client);
  try {
    return await stream.ask(request);
  } finally {
    stream.close();
  }
}

function filesOf(response: ReflectionResponse): FileDescriptorProto[] {
  return (response.file_descriptor_response?.file_descriptor_proto ?? []).map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes));
}


/** WorkerService's methods in proto order, as reflection must describe them. */
const WORKER_SERVICE_METHODS = [
  "GetWorker",
  "ListWorkers",
  "SendHeartbeat",
  "WatchWorkers",
  "ReleaseWorker",
  "GetWorkerHistory",
  "GetFleetSummary",
  "DeleteWorker",
  "CordonWorker",
  "UncordonWorker",
  "DrainWorker",
];
describe("grpc server", () => {
  let server: GrpcServer;
  const address = () => `127.0.0.1:${server.port}`;

  beforeAll(async () => {
    server = await startGrpcServer({
      address: "127.0.0.1:0",
      services: [
        { service: WorkerService, impl: workerImpl() },
        { service: RunnerService, impl: runnerImpl() },
      ],
    });
  });
  afterAll(() => server.shutdown(100));

  describe.each(["v1", "v1alpha"])("reflection %s", (version) => {
    let client: ReflectionClient;
    beforeAll(() => {
      const Reflection = clientFor(
        `grpc/reflection/${version}/reflection.proto`,
        [reflectionProtoDir],
        `grpc.reflection.${version}.ServerReflection`,
      );
      client = new Reflection(address(), grpc.credentials.createInsecure(), clientOptions);
    });
    afterAll(() => client.close());

    it("lists our services, health and reflection", async () => {
      const response = await reflect(client, { list_services: "*" });
      const names = response.list_services_response?.service.map((s) => s.name).sort();
      expect(names).toEqual(
        [
          "grpc.health.v1.Health",
          "grpc.reflection.v1.ServerReflection",
          "grpc.reflection.v1alpha.ServerReflection",
          "runnerline.v1.RunnerService",
          "runnerline.v1.WorkerService",
        ].sort(),
      );
    });

    it("describes WorkerService with every file it needs", async () => {
      const files = filesOf(await reflect(client, { file_containing_symbol: "runnerline.v1.WorkerService" }));
      expect(files[0]?.name).toBe("runnerline/v1/worker.proto");
      const service = files[0]?.service.find((s) => s.name === "WorkerService");
      expect(service?.method.map((m) => m.name)).toEqual(WORKER_SERVICE_METHODS);
      expect(service?.method.find((m) => m.name === "WatchWorkers")?.serverStreaming).toBe(true);
      expect(files.map((f) => f.name).sort()).toEqual(
        [
          "google/protobuf/duration.proto",
          "google/protobuf/struct.proto",
          "google/protobuf/timestamp.proto",
          "runnerline/v1/telemetry.proto",
          "runnerline/v1/worker.proto",
        ].sort(),
      );
      // What a reflection client does next: build a registry from the answer.
      // It only succeeds if every import came back and nothing was mangled.
      const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: importsFirst(files) }));
      expect(registry.getService("runnerline.v1.WorkerService")?.methods.map((m) => m.name)).toEqual(WORKER_SERVICE_METHODS);
    });

    it("keeps the proto comments (source_code_info)", async () => {
      const files = filesOf(await reflect(client, { file_containing_symbol: "runnerline.v1.WorkerService" }));
      const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: importsFirst(files) }));
      const service = registry.getService("runnerline.v1.WorkerService");
      expect(service && leadingComments(service)).toContain("Queries about the fleet of workers");
    });

    it.each([
      ["runnerline.v1.WorkerService.WatchWorkers", "runnerline/v1/worker.proto"],
      ["runnerline.v1.Worker", "runnerline/v1/worker.proto"],
      ["runnerline.v1.Worker.last_heartbeat_time", "runnerline/v1/worker.proto"],
      ["runnerline.v1.Attempt.last_heartbeat_time", "runnerline/v1/attempt.proto"],
      ["runnerline.v1.WorkerStatus", "runnerline/v1/worker.proto"],
      ["runnerline.v1.WorkerStatus.WORKER_STATUS_IDLE", "runnerline/v1/worker.proto"],
      // protobuf scopes enum values beside their enum; grpc-go resolves this form.
      ["runnerline.v1.WORKER_STATUS_IDLE", "runnerline/v1/worker.proto"],
      ["runnerline.v1.SessionRequest.message", "runnerline/v1/runner.proto"],
      ["google.protobuf.Timestamp", "google/protobuf/timestamp.proto"],
      ["grpc.health.v1.Health", "health/v1/health.proto"],
      ["grpc.health.v1.Health.Check", "health/v1/health.proto"],
      [`grpc.reflection.${version}.ServerReflection`, `grpc/reflection/${version}/reflection.proto`],
    ])("finds the file declaring %s", async (symbol, file) => {
      const files = filesOf(await reflect(client, { file_containing_symbol: symbol }));
      expect(files[0]?.name).toBe(file);
      // Complete on its own: a registry builds from every answer.
      expect(() => createFileRegistry(create(FileDescriptorSetSchema, { file: importsFirst(files) }))).not.toThrow();
    });

    it("makes health describable", async () => {
      const files = filesOf(await reflect(client, { file_containing_symbol: "grpc.health.v1.Health" }));
      const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: importsFirst(files) }));
      const health = registry.getService("grpc.health.v1.Health");
      expect(health?.methods.map((m) => [m.name, m.methodKind])).toEqual(
        expect.arrayContaining([
          ["Check", "unary"],
          ["Watch", "server_streaming"],
        ]),
      );
    });

    it("shows a method's comment the way grpcurl describe does", async () => {
      const symbol = "runnerline.v1.WorkerService.WatchWorkers";
      const files = filesOf(await reflect(client, { file_containing_symbol: symbol }));
      const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: importsFirst(files) }));
      const method = registry.getService("runnerline.v1.WorkerService")?.methods.find((m) => m.name === "WatchWorkers");
      const described = method ? describeMethod(method) : "";
      expect(described).toContain("// Streams the matching workers once");
      // The comment is the one above the rpc in the .proto, line for line.
      const source = readFileSync(path.join(repoRoot, "proto/runnerline/v1/worker.proto"), "utf8").split("\n");
      const rpcLine = source.findIndex((line) => line.trim().startsWith("rpc WatchWorkers("));
      const commentAbove: string[] = [];
      for (let i = rpcLine - 1; source[i]?.trim().startsWith("//"); i--) {
        commentAbove.unshift(source[i]?.trim() ?? "");
      }
      expect(described.split("\n").slice(1, -1)).toEqual(commentAbove);
    });

    it("keeps proto3 optional fields optional", async () => {
      // Not served by this server, but a dependency of runner.proto: reflection
      // answers for every file it was given.
      const [file] = filesOf(await reflect(client, { file_by_filename: "runnerline/v1/attempt.proto" }));
      expect(file?.name).toBe("runnerline/v1/attempt.proto");
      const ours = AttemptService.file.proto;
      expect(file && optionalFields(file)).toEqual(optionalFields(ours));
    });

    it("answers what it does not know with NOT_FOUND and keeps the stream open", async () => {
      const stream = openReflection(client);
      try {
        for (const request of [
          { file_containing_symbol: "nope.Nothing" },
          { file_containing_symbol: "runnerline.v1.Worker.no_such_field" },
          { file_by_filename: "nope/nothing.proto" },
          { file_containing_extension: { containing_type: "runnerline.v1.Worker", extension_number: 100 } },
          { all_extension_numbers_of_type: "nope.Nothing" },
        ]) {
          const response = await stream.ask(request);
          expect(response.error_response?.error_code, JSON.stringify(request)).toBe(grpc.status.NOT_FOUND);
        }
        // Same stream, next question: still answered.
        const files = filesOf(await stream.ask({ file_containing_symbol: "runnerline.v1.WorkerService" }));
        expect(files[0]?.name).toBe("runnerline/v1/worker.proto");
      } finally {
        stream.close();
      }
    });

    it("answers all_extension_numbers_of_type for a known message: none", async () => {
      const response = await reflect(client, { all_extension_numbers_of_type: "runnerline.v1.Worker" });
      expect(response.all_extension_numbers_response).toEqual({ base_type_name: "runnerline.v1.Worker", extension_number: [] });
    });
  });

  it("reports SERVING for the server and each service, NOT_FOUND for others", async () => {
    const Health = clientFor("health/v1/health.proto", [healthProtoDir], "grpc.health.v1.Health");
    const client = new Health(address(), grpc.credentials.createInsecure(), clientOptions);
    const check = (service: string) =>
      new Promise<{ status: string }>((resolve, reject) =>
        client["Check"]?.({ service }, (error: grpc.ServiceError | null, response: { status: string }) =>
          error ? reject(error) : resolve(response),
        ),
      );
    expect(await check("")).toEqual({ status: "SERVING" });
    expect(await check("runnerline.v1.WorkerService")).toEqual({ status: "SERVING" });
    await expect(check("runnerline.v1.Nope")).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    client.close();
  });
});

describe("grpc server shutdown", () => {
  it("turns health NOT_SERVING before it drains, then closes", async () => {
    const server = await startGrpcServer({
      address: "127.0.0.1:0",
      services: [{ service: WorkerService, impl: workerImpl() }],
    });
    const Health = clientFor("health/v1/health.proto", [healthProtoDir], "grpc.health.v1.Health");
    const client = new Health(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure(), clientOptions);
    const watch = client["Watch"]?.({ service: "" }) as grpc.ClientReadableStream<{ status: string }>;
    const statuses: string[] = [];
    const changed = new Promise<void>((resolve) =>
      watch.on("data", (message: { status: string }) => {
        statuses.push(message.status);
        if (message.status === "NOT_SERVING") resolve();
      }),
    );
    const ended = new Promise<grpc.StatusObject>((resolve) => watch.on("status", resolve));
    watch.on("error", () => undefined);
    await new Promise((resolve) => watch.once("data", resolve));
    const shutdown = server.shutdown(200);
    await changed;
    expect(statuses).toEqual(["SERVING", "NOT_SERVING"]);
    await shutdown;
    // The watch is a stream that never ends by itself; the grace period cut it.
    expect((await ended).code).not.toBe(grpc.status.OK);
    client.close();
  });
});

/**
 * What `grpcurl describe` prints for a method: its symbol, the leading
 * comments found in source_code_info, then the rpc line.
 */
function describeMethod(method: DescMethod): string {
  const comment = (leadingComments(method) ?? "")
    .replace(/\n$/, "")
    .split("\n")
    .map((line) => `//${line}`);
  const stream = (streaming: boolean) => (streaming ? "stream " : "");
  const rpc =
    `rpc ${method.name} ( ${stream(method.proto.clientStreaming)}.${method.input.typeName} )` +
    ` returns ( ${stream(method.proto.serverStreaming)}.${method.output.typeName} );`;
  return [`${method.parent.typeName}.${method.name} is a method:`, ...comment, rpc].join("\n");
}

/**
 * The leading comments of a service or method, looked up the way descriptor
 * consumers do: by its path in the file (field numbers and indexes) among the
 * source_code_info locations.
 */
function leadingComments(desc: DescService | DescMethod): string | undefined {
  const service = desc.kind === "service" ? desc : desc.parent;
  const path = [FileDescriptorProtoSchema.field.service.number, service.file.services.indexOf(service)];
  if (desc.kind === "rpc") {
    path.push(ServiceDescriptorProtoSchema.field.method.number, service.methods.indexOf(desc));
  }
  const location = service.file.proto.sourceCodeInfo?.location.find(
    (l) => l.path.length === path.length && l.path.every((n, i) => n === path[i]),
  );
  return location?.leadingComments;
}

function optionalFields(file: FileDescriptorProto): string[] {
  return file.messageType.flatMap((message) =>
    message.field.filter((field) => field.proto3Optional).map((field) => `${message.name}.${field.name}`),
  );
}

/**
 * Reflection sends a file before its imports; a FileDescriptorSet needs them
 * first. (createFileRegistry's resolver overload would do this, but in
 * @bufbuild/protobuf 2.x it orders siblings wrongly when one imports another.)
 */
function importsFirst(files: FileDescriptorProto[]): FileDescriptorProto[] {
  const byName = new Map(files.map((file) => [file.name, file]));
  const ordered: FileDescriptorProto[] = [];
  const seen = new Set<string>();
  const visit = (file: FileDescriptorProto): void => {
    if (seen.has(file.name)) return;
    seen.add(file.name);
    for (const name of file.dependency) {
      const dependency = byName.get(name);
      if (!dependency) throw new Error(`reflection did not send ${name}, imported by ${file.name}`);
      visit(dependency);
    }
    ordered.push(file);
  };
  files.forEach(visit);
  return ordered;
}
