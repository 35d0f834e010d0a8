import { createRequire } from "node:module";
import path from "node:path";
import { create, createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
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

const require = createRequire(import.meta.url);
const reflectionProtoDir = path.resolve(path.dirname(require.resolve("@grpc/reflection")), "../proto");
const healthProtoDir = path.resolve(path.dirname(healthProtoPath), "../..");

type ReflectionResponse = {
  list_services_response?: { service: { name: string }[] };
  file_descriptor_response?: { file_descriptor_proto: Buffer[] };
  error_response?: { error_code: number; error_message: string };
};

/** One request/response exchange on a reflection stream. */
function reflect(client: grpc.Client & Record<string, (...args: unknown[]) => unknown>, request: object): Promise<ReflectionResponse> {
  return new Promise((resolve, reject) => {
    const call = client["ServerReflectionInfo"]?.() as grpc.ClientDuplexStream<object, ReflectionResponse>;
    call.on("data", (response: ReflectionResponse) => {
      resolve(response);
      call.end();
    });
    call.on("error", reject);
    call.write({ host: "", ...request });
  });
}

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
    const Reflection = () =>
      clientFor(`grpc/reflection/${version}/reflection.proto`, [reflectionProtoDir], `grpc.reflection.${version}.ServerReflection`);

    it("lists our services, health and reflection", async () => {
      const client = new (Reflection())(address(), grpc.credentials.createInsecure(), clientOptions);
      const response = await reflect(client, { list_services: "*" });
      client.close();
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
      const client = new (Reflection())(address(), grpc.credentials.createInsecure(), clientOptions);
      const response = await reflect(client, { file_containing_symbol: "runnerline.v1.WorkerService" });
      client.close();
      const files = (response.file_descriptor_response?.file_descriptor_proto ?? []).map((bytes) =>
        fromBinary(FileDescriptorProtoSchema, bytes),
      );
      expect(files[0]?.name).toBe("runnerline/v1/worker.proto");
      const service = files[0]?.service.find((s) => s.name === "WorkerService");
      expect(service?.method.map((m) => m.name)).toEqual(["GetWorker", "ListWorkers", "SendHeartbeat", "WatchWorkers"]);
      expect(service?.method.find((m) => m.name === "WatchWorkers")?.serverStreaming).toBe(true);
      expect(files.map((f) => f.name)).toContain("google/protobuf/struct.proto");
      // What a reflection client does next: build a registry from the answer.
      // It only succeeds if every import came back and nothing was mangled.
      const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: importsFirst(files) }));
      expect(registry.getService("runnerline.v1.WorkerService")?.methods.map((m) => m.name)).toEqual([
        "GetWorker",
        "ListWorkers",
        "SendHeartbeat",
        "WatchWorkers",
      ]);
    });

    it("keeps proto3 optional fields optional", async () => {
      // Not served by this server, but a dependency of runner.proto: reflection
      // answers for every file it was given.
      const client = new (Reflection())(address(), grpc.credentials.createInsecure(), clientOptions);
      const response = await reflect(client, { file_by_filename: "runnerline/v1/attempt.proto" });
      client.close();
      const file = fromBinary(FileDescriptorProtoSchema, response.file_descriptor_response?.file_descriptor_proto[0] ?? new Uint8Array());
      expect(file.name).toBe("runnerline/v1/attempt.proto");
      const ours = AttemptService.file.proto;
      expect(optionalFields(file)).toEqual(optionalFields(ours));
    });

    it("answers NOT_FOUND for an unknown symbol", async () => {
      const client = new (Reflection())(address(), grpc.credentials.createInsecure(), clientOptions);
      const response = await reflect(client, { file_containing_symbol: "nope.Nothing" });
      client.close();
      expect(response.error_response?.error_code).toBe(grpc.status.NOT_FOUND);
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
