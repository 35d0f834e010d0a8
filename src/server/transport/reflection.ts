import { createRequire } from "node:module";
import path from "node:path";
import type { DescFile, DescService } from "@bufbuild/protobuf";
import { toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { protoPath as healthProtoPath } from "grpc-health-check";

/**
 * The files declaring `services`, with their transitive imports (e.g.
 * google/protobuf/struct.proto), as serialised FileDescriptorProtos, taken
 * from protobuf-es's embedded descriptors: the generated code is the one
 * source of truth for the schema, no .proto file is read at run time.
 */
export function serviceFileDescriptors(services: readonly DescService[]): Buffer[] {
  const seen = new Set<string>();
  const encoded: Buffer[] = [];
  const visit = (file: DescFile): void => {
    if (seen.has(file.proto.name)) {
      return;
    }
    seen.add(file.proto.name);
    file.dependencies.forEach(visit);
    const bytes = toBinary(FileDescriptorProtoSchema, file.proto);
    encoded.push(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  };
  services.forEach((service) => visit(service.file));
  return encoded;
}

/** Fully-qualified names of the services that reflection lists besides ours. */
export const infrastructureServiceNames = [
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
] as const;

/**
 * Register grpc.reflection.v1 and v1alpha, describing `services` plus health
 * and reflection themselves (what grpcurl expects to find).
 *
 * @grpc/reflection wants a proto-loader PackageDefinition but only reads the
 * `fileDescriptorProtos` of its entries, so our descriptors go in as one
 * entry of that shape; health and reflection come from the .proto files their
 * packages ship, loaded by proto-loader under their canonical import paths.
 */
export function addReflection(server: Pick<grpc.Server, "addService">, services: readonly DescService[]): void {
  const ours: protoLoader.EnumTypeDefinition = {
    format: "Protocol Buffer 3 EnumDescriptorProto",
    type: {},
    fileDescriptorProtos: serviceFileDescriptors(services),
  };
  const packageDefinition: protoLoader.PackageDefinition = {
    ...loadBundledProtos(),
    "runnerline.reflection.files": ours,
  };
  const reflection = new ReflectionService(packageDefinition, {
    services: [...services.map((service) => service.typeName), ...infrastructureServiceNames],
  });
  reflection.addToServer(server);
}

function loadBundledProtos(): protoLoader.PackageDefinition {
  const require = createRequire(import.meta.url);
  // build/src/index.js -> build/proto, where the package keeps its protos.
  const reflectionProtoDir = path.resolve(path.dirname(require.resolve("@grpc/reflection")), "../proto");
  // <root>/proto/health/v1/health.proto -> <root>/proto
  const healthProtoDir = path.resolve(path.dirname(healthProtoPath), "../..");
  return {
    ...protoLoader.loadSync(["grpc/reflection/v1/reflection.proto", "grpc/reflection/v1alpha/reflection.proto"], {
      includeDirs: [reflectionProtoDir],
    }),
    ...protoLoader.loadSync("health/v1/health.proto", { includeDirs: [healthProtoDir] }),
  };
}
