import { DomainError } from "../../domain/errors.js";

/** SQLSTATEs after which an operation is simply run again: serialization failure, deadlock. */
export const RETRYABLE = new Set(["40001", "40P01"]);
/** SQLSTATE classes that mean the database cannot be reached now (connection exceptions, shutdown). */
const UNREACHABLE_CLASSES = ["08", "57P"];

/** Whether an error says the database cannot be reached now (rather than that a statement was refused). */
export function isUnreachable(error: unknown): boolean {
  const code = (error as { code?: string }).code ?? "";
  if (UNREACHABLE_CLASSES.some((prefix) => code.startsWith(prefix))) return true;
  if (["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND"].includes(code)) return true;
  const message = messageOf(error);
  return /Connection terminated|connection timeout|Client has encountered a connection error|not queryable/i.test(message);
}

/** A database that cannot be reached is UNAVAILABLE to the caller (retry later); anything else stays as it is. */
export function unavailableOr(error: unknown): unknown {
  if (error instanceof DomainError) return error;
  if (isUnreachable(error)) return new DomainError("unavailable", `the database cannot be reached: ${messageOf(error)}`);
  return error;
}

export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
