import { create } from "@bufbuild/protobuf";
import { type SessionResponse, SessionResponseSchema } from "../../../gen/runnerline/v1/runner_pb.js";
import type { Turn } from "../turn/turn.js";
import type { SessionRegistry } from "./registry.js";

/** An open session with the attempts its worker holds. */
export interface OpenSession {
  sessionId: string;
  workerId: string;
  attemptIds: string[];
}

/**
 * Shutdown: once draining, nothing new is dispatched, every runner is told
 * (those that connect later too, through `drainMessage`), and the drain waits
 * for the attempts they hold to be reported.
 */
export class Drain {
  /** Set when the server shuts down: no more dispatching. */
  draining = false;
  /** What every session hears while draining. */
  drainMessage: SessionResponse | undefined;

  constructor(
    private readonly sessions: SessionRegistry,
    private readonly turn: Turn,
  ) {}

  /** Each open session with the attempts its worker holds: what a drain waits for, and what an abort abandons. */
  openSessions(): OpenSession[] {
    return Array.from(this.sessions.values(), (session) => ({
      sessionId: session.link.sessionId,
      workerId: session.link.workerId,
      attemptIds: session.worker.currentAttemptIds,
    }));
  }

  /**
   * Stops dispatching and tells every runner the server is going away; they
   * finish what they hold and report. Resolves as soon as no open session
   * holds an attempt (idle runners may stay connected, or reconnect and be
   * told again: they hold nothing to wait for), or when `timeoutMs` has
   * passed; `held` lists what is still held then.
   */
  async drain(reason: string, timeoutMs: number): Promise<{ held: OpenSession[] }> {
    this.draining = true;
    this.drainMessage = create(SessionResponseSchema, { message: { case: "drain", value: { reason } } });
    for (const session of this.sessions.values()) session.link.send(this.drainMessage);
    const holding = () => this.openSessions().filter((session) => session.attemptIds.length > 0);
    if (holding().length > 0) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.turn.settleWatchers.delete(check);
          resolve();
        };
        const check = () => {
          if (holding().length === 0) done();
        };
        const timer = setTimeout(done, timeoutMs);
        this.turn.settleWatchers.add(check);
      });
    }
    await this.turn.store.commit();
    return { held: holding() };
  }
}
