import { Code, ConnectError } from "@connectrpc/connect";
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
 * clients with their status code, whatever the transport. Streaming methods
 * (async generators) are wrapped as generators.
 */
export function mapDomainErrors<T extends Record<string, Handler>>(impl: T): T {
  const wrapped: Record<string, Handler> = {};
  for (const [name, method] of Object.entries(impl)) {
    const isGenerator = method.constructor.name === "AsyncGeneratorFunction";
    wrapped[name] = isGenerator
      ? async function* (this: unknown, ...args: never[]) {
          try {
            yield* method.apply(this, args) as AsyncIterable<unknown>;
          } catch (error) {
            throw toConnectError(error);
          }
        }
      : async function (this: unknown, ...args: never[]) {
          try {
            return await method.apply(this, args);
          } catch (error) {
            throw toConnectError(error);
          }
        };
  }
  return wrapped as T;
}
