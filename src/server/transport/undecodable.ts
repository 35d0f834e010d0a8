import { Code, ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";

/**
 * What a grpc-js request deserializer hands on instead of throwing when the
 * bytes are not the method's request message. grpc-js would answer a throw
 * with INTERNAL ("Error deserializing request") on its own, outside the
 * handler: a client error reported as a server fault, and on a bidi stream a
 * status that can race the handler's own writes. With this marker the
 * handler's usual path answers, with INVALID_ARGUMENT.
 */
export class UndecodableRequest {
  constructor(readonly methodPath: string) {}
}

/** The one answer, on both ports, to a request message that could not be decoded. */
export function undecodableRequestError(methodPath: string): ConnectError {
  return new ConnectError(
    `the request to ${methodPath.replace(/^\//, "")} is not a valid request message (its protobuf encoding could not be decoded)`,
    Code.InvalidArgument,
  );
}

function undecodableStatus(methodPath: string): Partial<grpc.StatusObject> {
  return { code: grpc.status.INVALID_ARGUMENT, details: undecodableRequestError(methodPath).rawMessage };
}

/**
 * A grpc-js server on which no request deserializer throws: every method
 * registered on it, ours or a library's (health, reflection), gets
 * UndecodableRequest for bytes it cannot decode. Unary and server-streaming
 * handlers never see the marker: they are answered INVALID_ARGUMENT here.
 * Client- and bidi-streaming handlers read it from the stream in order, after
 * the messages before it, and must end the call with undecodableRequestError
 * (RequestStream in the adapter does; so does reflection).
 */
export class DecodeSafeServer extends grpc.Server {
  override register<RequestType, ResponseType>(
    name: string,
    handler: grpc.UntypedHandleCall,
    serialize: grpc.serialize<ResponseType>,
    deserialize: grpc.deserialize<RequestType>,
    type: string,
  ): boolean {
    const safeDeserialize = (bytes: Buffer): RequestType => {
      try {
        return deserialize(bytes);
      } catch {
        // Typed as the request, which it stands in for until a handler checks.
        return new UndecodableRequest(name) as RequestType;
      }
    };
    return super.register(name, answerUndecodable(name, handler, type), serialize, safeDeserialize, type);
  }
}

function answerUndecodable(name: string, handler: grpc.UntypedHandleCall, type: string): grpc.UntypedHandleCall {
  switch (type) {
    case "unary": {
      const unary = handler as grpc.handleUnaryCall<unknown, unknown>;
      return ((call, callback) => {
        if (call.request instanceof UndecodableRequest) callback(undecodableStatus(name));
        else unary(call, callback);
      }) satisfies grpc.handleUnaryCall<unknown, unknown>;
    }
    case "serverStream": {
      const serverStreaming = handler as grpc.handleServerStreamingCall<unknown, unknown>;
      return ((call) => {
        // grpc-js's documented way to end a stream with a status.
        if (call.request instanceof UndecodableRequest) call.emit("error", undecodableStatus(name));
        else serverStreaming(call);
      }) satisfies grpc.handleServerStreamingCall<unknown, unknown>;
    }
    default:
      return handler;
  }
}
