import { Code, ConnectError } from "@connectrpc/connect";
import { createAsyncIterable, type UniversalHandler, type UniversalServerResponse } from "@connectrpc/connect/protocol";
import { codeToHttpStatus, errorToJsonBytes } from "@connectrpc/connect/protocol-connect";

/**
 * Two answers of connect-node that HTTP clients misread, made precise as they
 * leave each method's handler (where connect-node negotiated the protocol and
 * read the body):
 *
 * - A request without a Content-Type this port reads got 415 with an empty
 *   body. It still gets 415, with Accept-Post (RFC 9110) and a Connect error
 *   body naming the types the method takes. Its code is invalid_argument: the
 *   request, as sent, cannot be read, and sending it again will not help
 *   (Connect has no code of its own for 415).
 * - A request message over the port's limit got 429 Too Many Requests (the
 *   status Connect gives resource_exhausted), which HTTP clients take for rate
 *   limiting and retry. It gets 413 Content Too Large; the body's code stays
 *   resource_exhausted, what connect-go, connect-es and gRPC give a message
 *   over the limit, and what Connect clients read from the body.
 */
export function answerPreciseHttpStatus(handlers: UniversalHandler[], maxMessageBytes: number): void {
  for (const [index, handler] of handlers.entries()) {
    const accepted = acceptedTypes(handler.method.methodKind);
    const wrapped = async (request: Parameters<UniversalHandler>[0]) => {
      const response = await handler(request);
      if (response.status === 415) return unsupportedMediaType(request.header.get("content-type"), handler.method.methodKind, accepted);
      if (handler.method.methodKind === "unary") return rewriteOversize(response, maxMessageBytes);
      return response;
    };
    handlers[index] = Object.assign(wrapped, handler);
  }
}

/** The Content-Types a method of `kind` accepts on this port. */
function acceptedTypes(kind: string): string[] {
  const connect = kind === "unary" ? ["application/json", "application/proto"] : ["application/connect+json", "application/connect+proto"];
  return [...connect, "application/grpc-web+proto", "application/grpc-web-text+proto"];
}

function unsupportedMediaType(contentType: string | null, kind: string, accepted: string[]): UniversalServerResponse {
  const given = contentType === null || contentType === "" ? "no Content-Type" : `Content-Type ${JSON.stringify(contentType.slice(0, 100))}`;
  const message =
    `${given}: this ${kind === "unary" ? "unary" : "streaming"} method takes ${accepted.join(", ")} ` +
    "(Connect JSON or binary, gRPC-Web); plain gRPC (application/grpc) is served on the gRPC port";
  return jsonError(415, new ConnectError(message, Code.InvalidArgument), { "accept-post": accepted.join(", ") });
}

const OVERSIZE = /^message size (\d+ )?is larger than configured readMaxBytes \d+$/;

async function rewriteOversize(response: UniversalServerResponse, maxMessageBytes: number): Promise<UniversalServerResponse> {
  if (response.status !== codeToHttpStatus(Code.ResourceExhausted) || response.body === undefined) return response;
  if (!(response.header?.get("content-type") ?? "").startsWith("application/json") || response.header?.has("content-encoding")) {
    return response;
  }
  const chunks: Uint8Array[] = [];
  for await (const chunk of response.body) chunks.push(chunk);
  const bytes = Buffer.concat(chunks);
  const error = parseJson(bytes);
  const match = error?.code === "resource_exhausted" ? OVERSIZE.exec(error.message ?? "") : null;
  if (match === null) return { ...response, body: createAsyncIterable([bytes]) };
  const size = match[1] === undefined ? "" : `of ${match[1].trim()} bytes `;
  const message = `request message ${size}is larger than this port's limit of ${maxMessageBytes} bytes`;
  return jsonError(413, new ConnectError(message, Code.ResourceExhausted), {});
}

/**
 * Both answers come before the request body was read: "Connection: close", or
 * a client would send its next request after the rest of this body and have it
 * reset.
 */
function jsonError(status: number, error: ConnectError, extra: Record<string, string>): UniversalServerResponse {
  const body = errorToJsonBytes(error, {});
  const header = new Headers({ "content-type": "application/json", "content-length": String(body.byteLength), connection: "close", ...extra });
  return { status, header, body: createAsyncIterable([body]) };
}

function parseJson(bytes: Uint8Array): { code?: string; message?: string } | undefined {
  try {
    return JSON.parse(Buffer.from(bytes).toString("utf8")) as { code?: string; message?: string };
  } catch {
    return undefined;
  }
}
