/**
 * A refusal the domain can explain to the caller. Transports map the kind to
 * their status code in one place (services/errors.ts); the domain never knows
 * about gRPC.
 */
export type DomainErrorKind =
  | "invalid_argument"
  | "not_found"
  | "already_exists"
  | "failed_precondition"
  | "aborted"
  | "resource_exhausted"
  | "unavailable";

export class DomainError extends Error {
  constructor(
    readonly kind: DomainErrorKind,
    message: string,
  ) {
    super(message);
    this.name = "DomainError";
  }
}

export const invalidArgument = (message: string) => new DomainError("invalid_argument", message);
export const notFound = (message: string) => new DomainError("not_found", message);
export const failedPrecondition = (message: string) => new DomainError("failed_precondition", message);
