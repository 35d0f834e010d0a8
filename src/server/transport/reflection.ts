import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { DescService } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { quote } from "../../common/quote.js";
import { createReflectionFiles, splitFileDescriptorSet, type ReflectionFiles } from "./reflection-files.js";
import { UndecodableRequest, undecodableRequestError } from "./undecodable.js";

/**
 * What reflection describes, with comments: FileDescriptorSets written by
 * `npm run generate` (`buf build`), imports included. Ours from proto/
 * (protobuf-es's embedded descriptors carry no source_code_info, so they
 * cannot be what reflection serves); reflection's from the protos vendored in
 * ./protos; health's from the .proto the grpc-health-check package ships
 * beside the implementation that serves it.
 */
const descriptorSets = ["runnerline.binpb", "grpc-reflection.binpb", "grpc-health.binpb"].map((file) =>
  fileURLToPath(new URL(`../../gen/${file}`, import.meta.url)),
);

/** Reflection's own protos, vendored from grpc-proto; v1 and v1alpha have the same messages. */
const reflectionProtoDir = fileURLToPath(new URL("./protos", import.meta.url));
const reflectionVersions = ["v1", "v1alpha"] as const;

/** Fully-qualified names of the services that reflection lists besides ours. */
export const infrastructureServiceNames = [
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
] as const;

/**
 * Register grpc.reflection.v1 and v1alpha, listing `services` plus health and
 * reflection themselves (what grpcurl expects to find), and describing every
 * file of the schema, comments included, so `grpcurl describe` shows them.
 */
export function addReflection(server: Pick<grpc.Server, "addService">, services: readonly DescService[]): void {
  const files = createReflectionFiles(descriptorSets.flatMap((set) => splitFileDescriptorSet(readFileSync(set))));
  const serviceNames = [...services.map((service) => service.typeName), ...infrastructureServiceNames];
  for (const name of serviceNames) {
    if (files.registry.getService(name) === undefined) {
      throw new Error(`reflection: no descriptor declares ${name}; run \`npm run generate\``);
    }
  }
  const handler = serveReflection(files, serviceNames);
  for (const version of reflectionVersions) {
    // proto-loader for the (de)serialisers of the request and response messages.
    const definition = protoLoader.loadSync(`grpc/reflection/${version}/reflection.proto`, {
      includeDirs: [reflectionProtoDir],
      keepCase: true,
      oneofs: true,
    });
    const service = definition[`grpc.reflection.${version}.ServerReflection`] as grpc.ServiceDefinition;
    server.addService(service, { ServerReflectionInfo: handler });
  }
}

/** grpc.reflection.v1(alpha).ServerReflectionRequest as proto-loader decodes it (keepCase, oneofs). */
type ReflectionRequest = {
  host?: string;
  message_request?: "file_by_filename" | "file_containing_symbol" | "file_containing_extension" | "all_extension_numbers_of_type" | "list_services";
  file_by_filename?: string;
  file_containing_symbol?: string;
  file_containing_extension?: { containing_type?: string; extension_number?: number };
  all_extension_numbers_of_type?: string;
  list_services?: string;
};

type Answer =
  | { file_descriptor_response: { file_descriptor_proto: Uint8Array[] } }
  | { all_extension_numbers_response: { base_type_name: string; extension_number: number[] } }
  | { list_services_response: { service: { name: string }[] } }
  | { error_response: { error_code: grpc.status; error_message: string } };

type ReflectionResponse = { valid_host: string; original_request: ReflectionRequest } & Answer;

/**
 * ServerReflectionInfo: one answer per request, in order. What is unknown is
 * answered with an error_response, as grpc-go does; the stream stays open.
 */
function serveReflection(
  files: ReflectionFiles,
  serviceNames: readonly string[],
): grpc.handleBidiStreamingCall<ReflectionRequest, ReflectionResponse> {
  return (call) => {
    const onData = (request: ReflectionRequest | UndecodableRequest) => {
      if (request instanceof UndecodableRequest) {
        call.off("data", onData);
        call.emit("error", { code: grpc.status.INVALID_ARGUMENT, details: undecodableRequestError(request.methodPath).rawMessage });
        return;
      }
      call.write({ valid_host: request.host ?? "", original_request: request, ...answer(files, serviceNames, request) });
    };
    call.on("data", onData);
    call.on("end", () => call.end());
  };
}

function answer(files: ReflectionFiles, serviceNames: readonly string[], request: ReflectionRequest): Answer {
  const described = (found: Uint8Array[] | undefined, what: string): Answer =>
    found ? { file_descriptor_response: { file_descriptor_proto: found } } : notFound(what);
  switch (request.message_request) {
    case "list_services":
      return { list_services_response: { service: serviceNames.map((name) => ({ name })) } };
    case "file_by_filename": {
      const name = request.file_by_filename ?? "";
      return described(files.fileByName(name), `file ${quote(name)}`);
    }
    case "file_containing_symbol": {
      const symbol = request.file_containing_symbol ?? "";
      return described(files.fileContainingSymbol(symbol), `symbol ${quote(symbol)}`);
    }
    case "file_containing_extension": {
      const { containing_type = "", extension_number = 0 } = request.file_containing_extension ?? {};
      return described(
        files.fileContainingExtension(containing_type, extension_number),
        `extension ${extension_number} of ${quote(containing_type)}`,
      );
    }
    case "all_extension_numbers_of_type": {
      const type = request.all_extension_numbers_of_type ?? "";
      const numbers = files.extensionNumbersOf(type);
      return numbers
        ? { all_extension_numbers_response: { base_type_name: type, extension_number: numbers } }
        : notFound(`message type ${quote(type)}`);
    }
    case undefined:
      return { error_response: { error_code: grpc.status.INVALID_ARGUMENT, error_message: "empty reflection request" } };
  }
}

function notFound(what: string): Answer {
  return { error_response: { error_code: grpc.status.NOT_FOUND, error_message: `${what} not found` } };
}
