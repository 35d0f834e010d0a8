import type { DescMessage, DescMethod, DescService, MessageShape } from "@bufbuild/protobuf";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";

/**
 * The grpc-js view of a protobuf-es service: one method definition per RPC,
 * with protobuf-es doing the (de)serialisation. The server adapter and the
 * grpc-js clients (runner SDK, load generators) both build on this, so the
 * wire format has one source.
 */
export function grpcServiceDefinition(service: DescService): ServiceDefinition {
  const definition: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    definition[method.localName] = grpcMethodDefinition(service, method);
  }
  return definition as ServiceDefinition;
}

/** Path of an RPC on the wire, e.g. "/runnerline.v1.WorkerService/GetWorker". */
export function grpcMethodPath(service: DescService, method: DescMethod): string {
  return `/${service.typeName}/${method.name}`;
}

function grpcMethodDefinition(service: DescService, method: DescMethod): MethodDefinition<unknown, unknown> {
  return {
    path: grpcMethodPath(service, method),
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    requestSerialize: serializer(method.input),
    requestDeserialize: deserializer(method.input),
    responseSerialize: serializer(method.output),
    responseDeserialize: deserializer(method.output),
    originalName: method.localName,
  };
}

function serializer(schema: DescMessage): (message: unknown) => Buffer {
  return (message) => {
    const bytes = toBinary(schema, message as MessageShape<DescMessage>);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer(schema: DescMessage): (bytes: Buffer) => unknown {
  return (bytes) => fromBinary(schema, bytes);
}
