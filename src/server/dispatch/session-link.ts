import type { SessionResponse } from "../../gen/runnerline/v1/runner_pb.js";
import type { DomainErrorKind } from "../domain/errors.js";

/** What the coordinator knows of one live runner session. */
export interface SessionLink {
  readonly sessionId: string;
  readonly workerId: string;
  /** Assignments the runner has granted (Ready.slots) and not yet received. */
  credits: number;
  /** Goodbye received: it finishes what it holds and takes nothing new. */
  leaving: boolean;
  /** The worker's epoch its Hello got (set by the coordinator): the fence of every write made for this session. */
  epoch?: number;
  send(message: SessionResponse): void;
  /** Ends the stream with an error status (e.g. replaced by a newer session). */
  close(kind: DomainErrorKind, message: string): void;
}
