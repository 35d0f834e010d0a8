import { AttemptStatus } from "../../gen/runnerline/v1/attempt_pb.js";
import type { SessionResponse } from "../../gen/runnerline/v1/runner_pb.js";

/**
 * Cancelled attempts a session has not reported that it still remembers
 * (runner.proto, Hello.terminal_update_returns_credit). A runner may free a
 * cancelled attempt's slot with Ready and never report it, so without a bound
 * a long session would keep every such id.
 */
export const MAX_UNREPORTED_CANCELLED = 1024;

/**
 * Hello.terminal_update_returns_credit on the server: the attempts a session
 * holds, so that the first terminal update of each returns exactly one
 * credit and no other update returns any. It learns them from the messages
 * the session is sent (assignments, Welcome's resumed attempts), so it holds
 * exactly what the runner was told, whatever the coordinator decided where.
 */
export class TerminalCredits {
  private readonly held = new Set<string>();
  /** Held attempts the server has cancelled, oldest first (a Set keeps insertion order). */
  private readonly cancelled = new Set<string>();

  /** Notes a message on its way to the runner. */
  sent(response: SessionResponse): void {
    const message = response.message;
    switch (message.case) {
      case "welcome":
        for (const attemptId of message.value.resumedAttemptIds) this.held.add(attemptId);
        return;
      case "assignment":
        this.hold(message.value.attempt?.attemptId);
        return;
      case "assignmentBatch":
        for (const assignment of message.value.assignments) this.hold(assignment.attempt?.attemptId);
        return;
      case "cancel":
        this.noteCancel(message.value.attemptId);
        return;
      default:
        return;
    }
  }

  /**
   * Whether an update from the runner returns a credit: its first SUCCEEDED
   * or FAILED update of an attempt this session holds, which ends the hold.
   * Decided before the server judges the update: the runner's slot is free
   * whether the update is applied or refused.
   */
  returnsCredit(attemptId: string, status: AttemptStatus): boolean {
    if (status !== AttemptStatus.SUCCEEDED && status !== AttemptStatus.FAILED) return false;
    this.cancelled.delete(attemptId);
    return this.held.delete(attemptId);
  }

  private hold(attemptId: string | undefined) {
    if (attemptId) this.held.add(attemptId);
  }

  private noteCancel(attemptId: string) {
    if (!this.held.has(attemptId) || this.cancelled.has(attemptId)) return;
    this.cancelled.add(attemptId);
    if (this.cancelled.size <= MAX_UNREPORTED_CANCELLED) return;
    const oldest = this.cancelled.values().next().value as string;
    this.cancelled.delete(oldest);
    this.held.delete(oldest);
  }
}
