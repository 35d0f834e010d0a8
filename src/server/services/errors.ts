import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { DomainError, type DomainErrorKind } from "../domain/errors.js";

const CODES: Record<DomainErrorKind, Code> = {
  invalid_argument: Code.InvalidArgument,
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  failed_precondition: Code.FailedPrecondition,
  aborted: Code.Aborted,
  resource_exhausted: Code.ResourceExhausted,
  unavailable: Code.Unavailable,
};

/** The one place where domain refusals become status codes. */
export const codeOf = (kind: DomainErrorKind): Code => CODES[kind];

export function toConnectError(error: unknown): unknown {
  return error instanceof DomainError ? new ConnectError(error.message, CODES[error.kind]) : error;
}

type Handler = (...args: never[]) => unknown;

/**
 * Wraps every method of a service implementation so domain refusals reach
 * clients with their status code, whatever the transport. Methods that answer
 * with a stream (as the service descriptor says) are wrapped as generators.
 */
export function mapDomainErrors<S extends DescService>(service: S, impl: ServiceImpl<S>): ServiceImpl<S> {
  const methods = impl as unknown as Record<string, Handler>;
  const wrapped: Record<string, Handler> = {};
  for (const method of service.methods) {
    const handler = methods[method.localName];
    if (handler === undefined) continue;
    const streamsOut = method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming";
    wrapped[method.localName] = streamsOut
      ? async function* (this: unknown, ...args: never[]) {
          try {
            yield* handler.apply(this, args) as AsyncIterable<unknown>;
          } catch (error) {
            throw toConnectError(error);
          }
        }
      : async function (this: unknown, ...args: never[]) {
          try {
            return await handler.apply(this, args);
          } catch (error) {
            throw toConnectError(error);
          }
        };
  }
  return wrapped as unknown as ServiceImpl<S>;
}
