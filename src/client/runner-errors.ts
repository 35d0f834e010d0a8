import * as grpc from "@grpc/grpc-js";

/**
 * The server refused the runner's Hello for a reason retrying cannot fix
 * (INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED): run() and
 * assignments() reject with it and the runner stops.
 */
export class RunnerRefusedError extends Error {
  constructor(
    readonly code: grpc.status,
    readonly details: string,
  ) {
    super(`the server refused this runner (${grpc.status[code]}): ${details}`);
    this.name = "RunnerRefusedError";
  }
}

/**
 * Another process opened a session with this runner's worker id, and the
 * server gave it the worker (the newer session wins): run() and
 * assignments() reject with it and the runner stops instead of reconnecting,
 * which would only take the worker back and start a fight between the two.
 * Give each runner its own worker id.
 */
export class SessionReplacedError extends Error {
  constructor(
    readonly workerId: string,
    /** The newer session's id; empty when another server sharing the store opened it. */
    readonly newSessionId: string,
    /** The newer session's address as the server saw it; empty when unknown. */
    readonly newPeer: string,
  ) {
    super(
      `another runner opened a session with worker id ${workerId}` +
        (newPeer ? ` from ${newPeer}` : "") +
        `, which replaced this one's; stopping instead of taking it back (give each runner its own worker id)`,
    );
    this.name = "SessionReplacedError";
  }
}

/** The abort reason of a job the server cancelled. */
export class AttemptCancelledError extends Error {
  constructor(
    readonly attemptId: string,
    readonly reason: string,
  ) {
    super(reason || "attempt cancelled");
    this.name = "AttemptCancelledError";
  }
}

/**
 * A gRPC status message for a log line: grpc-js appends "Resolution note: "
 * to connection failures even when it has no note, which reads as if
 * something were cut off.
 */
export function statusDetails(details: string | undefined): string {
  return (details ?? "").replace(/\.?\s*Resolution note:\s*$/, "");
}
