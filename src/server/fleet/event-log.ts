import { type Attempt, AttemptErrorKind, AttemptStatus } from "../../gen/runnerline/v1/attempt_pb.js";
import { type Rollout, RolloutStatus } from "../../gen/runnerline/v1/rollout_pb.js";
import { WorkerStatus } from "../../gen/runnerline/v1/worker_pb.js";
import type { TransitionObserver } from "../dispatch/transition-observer.js";
import { isAttemptActive } from "../domain/attempt.js";
import { isRolloutQueued, maxAttempts } from "../domain/rollout.js";
import { msOf } from "../domain/time.js";
import type { WorkerRecord } from "../domain/worker.js";
import type { Logger } from "../logging.js";

/**
 * One log line per event an operator wants to find later — a timeout, an
 * unresponsive verdict, a retry, a cancel, a failed rollout — with the ids as
 * fields. Never one per heartbeat: heartbeats change no status, and only
 * status changes are logged here (worker status changes at debug level).
 */
export function eventLog(logger: Logger): TransitionObserver {
  return {
    attemptChanged(before: Attempt | undefined, after: Attempt) {
      if (before === undefined || !isAttemptActive(before.status) || isAttemptActive(after.status)) return;
      const fields = { attemptId: after.attemptId, rolloutId: after.rolloutId, workerId: after.workerId, sequenceId: after.sequenceId };
      const reason = after.error?.message;
      switch (after.status) {
        case AttemptStatus.TIMEOUT:
          logger.warn({ ...fields, reason }, "attempt timed out");
          break;
        case AttemptStatus.UNRESPONSIVE:
          logger.warn({ ...fields, reason }, "attempt unresponsive");
          break;
        case AttemptStatus.FAILED:
          if (after.error?.kind === AttemptErrorKind.CANCELLED) break; // the rollout's cancel line says it
          logger.info({ ...fields, reason, errorKind: AttemptErrorKind[after.error?.kind ?? 0] }, "attempt failed");
          break;
        default:
          logger.debug({ ...fields, status: AttemptStatus[after.status] }, "attempt ended");
      }
    },
    rolloutChanged(before: Rollout | undefined, after: Rollout) {
      if (before === undefined || before.status === after.status) return;
      const fields = { rolloutId: after.rolloutId, attemptCount: after.attemptCount };
      if (isRolloutQueued(after.status) && !isRolloutQueued(before.status)) {
        const at = msOf(after.nextAttemptTime);
        logger.info(
          {
            ...fields,
            maxAttempts: maxAttempts(after),
            previousAttemptId: after.latestAttemptId,
            ...(at !== undefined && { notBefore: new Date(at).toISOString() }),
          },
          "rollout retrying",
        );
      } else if (after.status === RolloutStatus.CANCELLED) {
        logger.info({ ...fields, attemptId: after.latestAttemptId || undefined }, "rollout cancelled");
      } else if (after.status === RolloutStatus.FAILED) {
        logger.warn({ ...fields, reason: after.failureReason }, "rollout failed");
      }
    },
    workerChanged(before: WorkerRecord | undefined, after: WorkerRecord) {
      if (before === undefined || before.worker.status === after.worker.status) return;
      logger.debug(
        { workerId: after.worker.workerId, from: WorkerStatus[before.worker.status], to: WorkerStatus[after.worker.status] },
        "worker status changed",
      );
    },
  };
}
