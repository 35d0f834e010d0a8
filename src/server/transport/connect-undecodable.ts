import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { createAsyncIterable, encodeEnvelope, type UniversalHandler, type UniversalServerResponse } from "@connectrpc/connect/protocol";
import { codeToHttpStatus, errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import { trailerFlag, trailerParse, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import { grpcMethodPath } from "../../common/grpc-definition.js";
import { undecodableRequestError } from "./undecodable.js";

/**
 * connect-node answers a request message it cannot decode from protobuf
 * binary with INTERNAL "parse binary: <decoder text>" (its serializer is
 * shared with clients, for whom a bad response is an internal fault). For a
 * server that is a client error, and the decoder's words are none of the
 * client's business: these wrappers turn it into the same INVALID_ARGUMENT the
 * gRPC port gives (undecodableRequestError).
 *
 * connect-es offers no option for this and decodes a unary request before any
 * interceptor runs, so there are two seams: unary answers are rewritten as
 * they leave the handler (Connect's JSON error body, gRPC-Web's trailer), and
 * streaming requests, decoded while the handler reads them, go through an
 * interceptor. Both recognise connect-es's own wording, which the tests pin.
 */
export function isConnectDecodeFailure(error: unknown): boolean {
  return error instanceof ConnectError && error.code === Code.Internal && isDecodeFailureMessage(error.rawMessage);
}

const isDecodeFailureMessage = (message: string) => message.startsWith("parse binary: ");

/** Wraps the router's handlers (in place, before the adapter reads them) so unary decode failures answer INVALID_ARGUMENT. */
export function answerUndecodableUnary(handlers: UniversalHandler[]): void {
  for (const [index, handler] of handlers.entries()) {
    if (handler.method.methodKind !== "unary") continue;
    const path = grpcMethodPath(handler.service, handler.method);
    const wrapped = async (request: Parameters<UniversalHandler>[0]) => {
      const response = await handler(request);
      const contentType = request.header.get("content-type") ?? "";
      if (contentType.startsWith("application/grpc-web")) return rewriteGrpcWebTrailer(response, path);
      return rewriteConnectError(response, path);
    };
    handlers[index] = Object.assign(wrapped, handler);
  }
}

/** The interceptor for streaming calls: a request message that fails to decode ends the call with INVALID_ARGUMENT. */
export const undecodableStreamRequests: Interceptor = (next) => (request) => {
  if (!request.stream) return next(request);
  const path = grpcMethodPath(request.service, request.method);
  return next({ ...request, message: mapDecodeFailure(request.message, path) });
};

async function* mapDecodeFailure<T>(messages: AsyncIterable<T>, path: string): AsyncGenerator<T> {
  try {
    yield* messages;
  } catch (error) {
    throw isConnectDecodeFailure(error) ? undecodableRequestError(path) : error;
  }
}

/** Connect unary errors are a JSON body {code, message} with the matching HTTP status. */
async function rewriteConnectError(response: UniversalServerResponse, path: string): Promise<UniversalServerResponse> {
  if (response.status !== codeToHttpStatus(Code.Internal) || response.body === undefined || response.header?.has("content-encoding")) {
    return response;
  }
  const chunks: Uint8Array[] = [];
  for await (const chunk of response.body) chunks.push(chunk);
  const bytes = Buffer.concat(chunks);
  const error = parseJsonError(bytes);
  if (error?.code !== "internal" || !isDecodeFailureMessage(error.message ?? "")) {
    return { ...response, body: createAsyncIterable([bytes]) };
  }
  const body = errorToJsonBytes(undecodableRequestError(path), {});
  const header = new Headers(response.header);
  header.set("content-length", String(body.byteLength));
  return { ...response, status: codeToHttpStatus(Code.InvalidArgument), header, body: createAsyncIterable([body]) };
}

function parseJsonError(bytes: Uint8Array): { code?: string; message?: string } | undefined {
  try {
    return JSON.parse(Buffer.from(bytes).toString("utf8")) as { code?: string; message?: string };
  } catch {
    return undefined;
  }
}

/**
 * A gRPC-Web unary call that failed before its handler ran answers with a
 * trailer envelope only; its status is in there.
 */
async function rewriteGrpcWebTrailer(response: UniversalServerResponse, path: string): Promise<UniversalServerResponse> {
  if (response.body === undefined) return response;
  const iterator = response.body[Symbol.asyncIterator]();
  const first = await iterator.next();
  const rest = { [Symbol.asyncIterator]: () => iterator };
  if (first.done === true) return { ...response, body: rest };
  const chunk = first.value;
  const body = (head: Uint8Array) => ({ ...response, body: prepend(head, rest) });
  if (chunk.byteLength < 5 || chunk[0] !== trailerFlag || chunk.byteLength !== 5 + Buffer.from(chunk).readUInt32BE(1)) {
    return body(chunk);
  }
  const trailer = trailerParse(chunk.subarray(5));
  const message = decodeURIComponent(trailer.get("grpc-message") ?? "");
  if (trailer.get("grpc-status") !== String(Code.Internal) || !isDecodeFailureMessage(message)) {
    return body(chunk);
  }
  trailer.set("grpc-status", String(Code.InvalidArgument));
  trailer.set("grpc-message", encodeURIComponent(undecodableRequestError(path).rawMessage));
  return body(encodeEnvelope(trailerFlag, trailerSerialize(trailer)));
}

async function* prepend(head: Uint8Array, rest: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  yield head;
  yield* rest;
}
