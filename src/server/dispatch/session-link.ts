import type { SessionResponse } from "../../gen/runnerline/v1/runner_pb.js";
import type { DomainErrorKind } from "../domain/errors.js";

/** The newer session of the same worker that replaces a session; fields are empty when another server opened it. */
export interface Replacement {
  readonly sessionId: string;
  readonly peer: string;
}

/** What the coordinator knows of one live runner session. */
export interface SessionLink {
  readonly sessionId: string;
  readonly workerId: string;
  /** The runner's "address:port" as the transport saw it, when known (logs, SessionReplaced). */
  readonly peer?: string;
  /** Assignments the runner has granted (Ready.slots) and not yet received. */
  credits: number;
  /** Goodbye received: it finishes what it holds and takes nothing new. */
  leaving: boolean;
  /** The worker's epoch its Hello got (set by the coordinator): the fence of every write made for this session. */
  epoch?: number;
  send(message: SessionResponse): void;
  /** Ends the stream with an error status. */
  close(kind: DomainErrorKind, message: string): void;
  /**
   * A newer session of the same worker took over: tells the runner
   * (SessionReplaced), then ends the stream with ABORTED (replacementMessage).
   */
  replaced(by: Replacement): void;
}

/** The ABORTED status message of a replaced session. */
export function replacementMessage(workerId: string, by: Replacement): string {
  const newer = by.sessionId === "" ? "a newer session on another server" : `a newer session (${by.sessionId}${by.peer ? ` from ${by.peer}` : ""})`;
  return `replaced by ${newer} for worker ${workerId}`;
}
