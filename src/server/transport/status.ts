import { ConnectError } from "@connectrpc/connect";
import { status as GrpcStatus, type StatusObject } from "@grpc/grpc-js";
import { metadataFromHeaders } from "./metadata.js";

/**
 * The gRPC status a failed handler answers with. A ConnectError keeps its code
 * (Connect's codes are gRPC's, number for number), its message and its
 * metadata (sent as trailers, as Connect does, after the headers and trailers
 * the handler had set: on an error they all travel as trailers). Anything else is a bug, not an
 * answer: the client gets a bare INTERNAL so no internals leak, and the error
 * is logged here, once, with the method it escaped from.
 */
export function grpcStatusFromError(error: unknown, methodPath: string, ...trailers: Headers[]): Partial<StatusObject> {
  if (error instanceof ConnectError) {
    return {
      code: error.code as number as GrpcStatus,
      details: wellFormed(error.rawMessage),
      metadata: metadataFromHeaders(...trailers, error.metadata),
    };
  }
  console.error(`${methodPath}: handler failed with an unexpected error; answering INTERNAL`, error);
  return {
    code: GrpcStatus.INTERNAL,
    details: "internal error",
    metadata: metadataFromHeaders(...trailers),
  };
}

/**
 * grpc-js percent-encodes the message with encodeURI, which throws on a lone
 * surrogate and leaves the call unanswered; messages that echo a caller's text
 * could carry one, so each is made well-formed (U+FFFD for a lone surrogate).
 */
function wellFormed(text: string): string {
  return text.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, "\uFFFD");
}
