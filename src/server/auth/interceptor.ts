import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { callerNameKey } from "../transport/context.js";
import { type MethodRule, ROLE_SUMMARY, roleAllows, type WorkerScope } from "./policy.js";
import { type Principal, sha256Hex, type TokenTable } from "./tokens.js";

export interface AuthOptions {
  /** The current token table; read on every call, so a reload takes effect for new calls at once. */
  tokens: () => TokenTable;
  rules: Map<DescMethod, MethodRule>;
  /** Worker holding an attempt, or undefined when the attempt is unknown (the handler then answers NOT_FOUND). */
  attemptWorker: (attemptId: string) => Promise<string | undefined>;
  log: (line: string) => void;
}

/**
 * The one place where calls are authenticated and authorized, installed on
 * both transports. Runs once per call: a stream's token is checked when it
 * opens, and its Hello once, not every message.
 */
export function authInterceptor(options: AuthOptions): Interceptor {
  return (next) => async (req) => {
    const rule = options.rules.get(req.method);
    const principal = authenticate(options.tokens(), req.header.get("authorization"));
    const methodName = `${req.service.name}.${req.method.name}`;
    if (rule === undefined || !roleAllows(principal.role, rule)) {
      throw denied(options, principal, `${ROLE_SUMMARY[principal.role]}; ${methodName} is not among them`);
    }
    req.contextValues.set(callerNameKey, principal.name);
    if (rule.access !== "worker" || principal.role !== "runner") return next(req);
    const scope = rule.scope;
    if (scope.from === "hello") {
      if (!req.stream) throw new ConnectError(`${methodName}: expected a stream`, Code.Internal);
      return next({ ...req, message: checkFirst(req.message, (first) => checkHello(options, principal, first)) });
    }
    if (req.stream) throw new ConnectError(`${methodName}: expected a single request`, Code.Internal);
    const value = (req.message as unknown as Record<string, unknown>)[scope.field];
    const workerId = typeof value !== "string" ? "" : scope.from === "request" ? value : await options.attemptWorker(value);
    // A missing id is the handler's to refuse (INVALID_ARGUMENT), whoever asks.
    if (workerId !== undefined && workerId !== "") checkWorker(options, principal, scope, workerId);
    return next(req);
  };
}

const BEARER = /^Bearer +(\S+) *$/i;

function authenticate(tokens: TokenTable, header: string | null): Principal {
  if (header === null) {
    throw new ConnectError("this server requires a token: send the header 'authorization: Bearer <token>'", Code.Unauthenticated);
  }
  const token = BEARER.exec(header)?.[1];
  if (token === undefined) {
    throw new ConnectError("the authorization header must read 'Bearer <token>'", Code.Unauthenticated);
  }
  const principal = tokens.get(sha256Hex(token));
  if (principal === undefined) throw new ConnectError("unknown or revoked token", Code.Unauthenticated);
  return principal;
}

function checkWorker(options: AuthOptions, principal: Principal, scope: WorkerScope, workerId: string): void {
  if (principal.mayActAs(workerId)) return;
  const what = scope.from === "attempt" ? `report an attempt held by worker "${workerId}"` : `act as worker "${workerId}"`;
  throw denied(options, principal, `may not ${what}: its worker patterns do not match`);
}

function checkHello(options: AuthOptions, principal: Principal, first: unknown): void {
  const message = (first as { message?: { case?: string; value?: { workerId?: string } } }).message;
  // A stream that does not start with hello, or a Hello without an id, is refused by the handler.
  const workerId = message?.case === "hello" ? (message.value?.workerId ?? "") : "";
  if (workerId !== "") checkWorker(options, principal, { from: "hello" }, workerId);
}

function denied(options: AuthOptions, principal: Principal, what: string): ConnectError {
  const message = `token "${principal.name}" has role ${principal.role}, which ${what}`;
  options.log(`auth: denied: ${message}`);
  return new ConnectError(message, Code.PermissionDenied);
}

/**
 * The same stream, with `check` applied to its first message. Hand-rolled so
 * later messages pass through with no extra promise turns.
 */
function checkFirst<T>(source: AsyncIterable<T>, check: (first: T) => void): AsyncIterable<T> {
  return {
    [Symbol.asyncIterator]() {
      const inner = source[Symbol.asyncIterator]();
      let checked = false;
      return {
        next() {
          if (checked) return inner.next();
          checked = true;
          return inner.next().then((result) => {
            if (result.done !== true) check(result.value);
            return result;
          });
        },
        return: inner.return && ((value?: unknown) => inner.return!(value)),
        throw: inner.throw && ((error?: unknown) => inner.throw!(error)),
      };
    },
  };
}
