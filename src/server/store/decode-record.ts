import { type DescMessage, fromBinary, type MessageShape } from "@bufbuild/protobuf";
import { fullShape } from "../domain/full-shape.js";

/** A stored attempt or worker message, decoded with every field present, as the domain makes them (domain/full-shape.ts). */
export function decodeRecord<Desc extends DescMessage>(schema: Desc, bytes: Uint8Array): MessageShape<Desc> {
  return fullShape(schema, fromBinary(schema, bytes));
}
