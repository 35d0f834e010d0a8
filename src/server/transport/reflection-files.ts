import { create, createFileRegistry, fromBinary, type DescFile, type FileRegistry } from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

/**
 * The schema that server reflection describes, answering in serialised
 * FileDescriptorProtos: each one exactly the bytes it was given, so that
 * source_code_info (the proto comments grpcurl shows) survives.
 *
 * Every answer is the file asked for first, then each of its transitive
 * imports once, as grpc-go sends them to a client that has seen none yet.
 * Lookups answer undefined for what the schema does not declare.
 */
export type ReflectionFiles = {
  registry: FileRegistry;
  fileByName(name: string): Uint8Array[] | undefined;
  /**
   * `symbol` is a fully-qualified service, method, message, field, oneof,
   * enum, enum value or extension. Enum values resolve both under their enum
   * (`pkg.Status.STATUS_IDLE`) and in protobuf's own scoping, as siblings of
   * their enum (`pkg.STATUS_IDLE`).
   */
  fileContainingSymbol(symbol: string): Uint8Array[] | undefined;
  fileContainingExtension(containingType: string, fieldNumber: number): Uint8Array[] | undefined;
  /** Field numbers of the extensions of message `typeName`; undefined if there is no such message. */
  extensionNumbersOf(typeName: string): number[] | undefined;
};

/**
 * `files` are serialised FileDescriptorProtos, each after the files it
 * imports, which is the order of a FileDescriptorSet written by `buf build`.
 */
export function createReflectionFiles(files: readonly Uint8Array[]): ReflectionFiles {
  const bytesByName = new Map<string, Uint8Array>();
  const protos = files.map((bytes) => {
    const proto = fromBinary(FileDescriptorProtoSchema, bytes);
    if (bytesByName.has(proto.name)) {
      throw new Error(`reflection: ${proto.name} given twice`);
    }
    bytesByName.set(proto.name, bytes);
    return proto;
  });
  const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: protos }));
  const fileBySymbol = symbolIndex(registry);

  const withImports = (file: DescFile | undefined): Uint8Array[] | undefined => {
    if (file === undefined) {
      return undefined;
    }
    const answer: Uint8Array[] = [];
    const seen = new Set<string>();
    const queue = [file];
    for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
      if (seen.has(next.proto.name)) {
        continue;
      }
      seen.add(next.proto.name);
      // Present: the registry only holds files built from bytesByName.
      answer.push(bytesByName.get(next.proto.name) as Uint8Array);
      queue.push(...next.dependencies);
    }
    return answer;
  };

  return {
    registry,
    fileByName: (name) => withImports(registry.getFile(name)),
    fileContainingSymbol: (symbol) => withImports(fileBySymbol.get(symbol)),
    fileContainingExtension: (containingType, fieldNumber) => {
      const message = registry.getMessage(containingType);
      return withImports(message && registry.getExtensionFor(message, fieldNumber)?.file);
    },
    extensionNumbersOf: (typeName) => {
      if (registry.getMessage(typeName) === undefined) {
        return undefined;
      }
      const numbers: number[] = [];
      for (const type of registry) {
        if (type.kind === "extension" && type.extendee.typeName === typeName) {
          numbers.push(type.number);
        }
      }
      return numbers.sort((a, b) => a - b);
    },
  };
}

/** The FileDescriptorProtos in a serialised FileDescriptorSet, as the bytes they are there. */
export function splitFileDescriptorSet(set: Uint8Array): Uint8Array[] {
  const fileField = FileDescriptorSetSchema.field.file.number;
  const reader = new BinaryReader(set);
  const files: Uint8Array[] = [];
  while (reader.pos < reader.len) {
    const [fieldNo, wireType] = reader.tag();
    if (fieldNo === fileField && wireType === WireType.LengthDelimited) {
      files.push(reader.bytes());
    } else {
      reader.skip(wireType);
    }
  }
  return files;
}

/** Every name a reflection client may ask file_containing_symbol about, to the file declaring it. */
function symbolIndex(registry: FileRegistry): Map<string, DescFile> {
  const index = new Map<string, DescFile>();
  for (const file of registry.files) {
    for (const type of nestedTypes(file)) {
      index.set(type.typeName, file);
      switch (type.kind) {
        case "message":
          for (const member of [...type.fields, ...type.oneofs]) {
            index.set(`${type.typeName}.${member.name}`, file);
          }
          break;
        case "enum": {
          const scope = type.typeName.slice(0, Math.max(type.typeName.lastIndexOf("."), 0));
          for (const value of type.values) {
            index.set(`${type.typeName}.${value.name}`, file);
            index.set(scope ? `${scope}.${value.name}` : value.name, file);
          }
          break;
        }
        case "service":
          for (const method of type.methods) {
            index.set(`${type.typeName}.${method.name}`, file);
          }
          break;
        case "extension":
          break;
      }
    }
  }
  return index;
}
