import type { SessionRequest } from "../../gen/runnerline/v1/runner_pb.js";

/** Attempt updates of one session in flight at once; beyond this the stream is not read until one finishes. */
export const MAX_UPDATES_IN_FLIGHT = 1024;

/**
 * The order in which one session's requests are applied. Attempt updates
 * about different attempts do not wait for each other: each starts as soon
 * as it arrives (after the previous update of the same attempt), so a
 * runner's reports share the store's turns instead of taking one turn each
 * in a row. Every other request (heartbeat, ready, goodbye) waits until all
 * earlier requests are done, and later ones wait for it, as before.
 *
 * `run` answers a request: it resolves when the request is applied or
 * refused (the caller's own handling of refusals included); a rejection ends
 * the session: `fail` hears the first such error at once, and `failure`
 * holds it.
 */
export class RequestPipeline {
  private readonly inFlight = new Set<Promise<void>>();
  private readonly lastOfAttempt = new Map<string, Promise<void>>();
  private failed: { error: unknown } | undefined;

  constructor(
    private readonly run: (request: SessionRequest) => Promise<void>,
    private readonly fail: (error: unknown) => void,
  ) {}

  /** The first error that ended the session, if any. */
  get failure(): { error: unknown } | undefined {
    return this.failed;
  }

  /** Takes the next request in arrival order; resolves when the stream may be read further. */
  async push(request: SessionRequest): Promise<void> {
    // The session is ending: nothing more is applied.
    if (this.failed !== undefined) return;
    if (request.message.case !== "attemptUpdate") {
      // Most often nothing is in flight (a heartbeat between reports): no promise to wait for then.
      if (this.inFlight.size > 0) await this.idle();
      if (this.failed !== undefined) return;
      try {
        await this.run(request);
      } catch (error) {
        this.failed = { error };
        throw error;
      }
      return;
    }
    const attemptId = request.message.value.attemptId;
    const before = this.lastOfAttempt.get(attemptId);
    const started = before === undefined ? this.run(request) : before.then(() => this.run(request));
    const tracked: Promise<void> = started
      .catch((error: unknown) => {
        if (this.failed !== undefined) return;
        this.failed = { error };
        this.fail(error);
      })
      .finally(() => {
        this.inFlight.delete(tracked);
        if (this.lastOfAttempt.get(attemptId) === tracked) this.lastOfAttempt.delete(attemptId);
      });
    this.inFlight.add(tracked);
    this.lastOfAttempt.set(attemptId, tracked);
    if (this.inFlight.size >= MAX_UPDATES_IN_FLIGHT) await Promise.race(this.inFlight);
  }

  /** Resolves once every request taken so far is done. */
  async idle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all(this.inFlight);
  }
}
