import { decodeBinaryHeader, encodeBinaryHeader } from "@connectrpc/connect";
import { Metadata } from "@grpc/grpc-js";

/**
 * gRPC metadata as header entries for a Connect HandlerContext. Binary
 * ("-bin") values are base64-encoded, as Connect's own gRPC transport does,
 * so a handler reads them the same way whichever transport the call came in on.
 */
export function headerEntriesFromMetadata(metadata: Metadata): [string, string][] {
  const entries: [string, string][] = [];
  for (const key of Object.keys(metadata.getMap())) {
    for (const value of metadata.get(key)) {
      entries.push([key, typeof value === "string" ? value : encodeBinaryHeader(value)]);
    }
  }
  return entries;
}

/**
 * Connect headers as gRPC metadata; undefined when there is nothing to send,
 * so that the common case allocates nothing. Keys the gRPC protocol reserves
 * ("grpc-*") are dropped: grpc-js writes those itself.
 */
export function metadataFromHeaders(...sources: (Headers | undefined)[]): Metadata | undefined {
  let metadata: Metadata | undefined;
  for (const headers of sources) {
    headers?.forEach((value, key) => {
      if (key.startsWith("grpc-")) {
        return;
      }
      metadata ??= new Metadata();
      if (key.endsWith("-bin")) {
        metadata.add(key, Buffer.from(decodeBinaryHeader(value)));
      } else {
        metadata.add(key, value);
      }
    });
  }
  return metadata;
}
