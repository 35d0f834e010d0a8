import type { Attempt } from "../../../gen/runnerline/v1/attempt_pb.js";
import type { Rollout } from "../../../gen/runnerline/v1/rollout_pb.js";
import { watchdogDue } from "../../domain/attempt.js";
import { rolloutExpiryDue } from "../../domain/rollout.js";
import type { Clock, Millis } from "../../domain/time.js";
import { type Attachment, latenessDue, type Liveness, type WorkerRecord } from "../../domain/worker.js";
import { DueTimers, startTimerDriver } from "./due-timers.js";
import type { MassDropBrake } from "./mass-drop-brake.js";

/** What a due timer stands for; its id is the attempt's, rollout's or worker's. */
export type TimerKind =
  /** An active attempt may have run too long or gone silent. */
  | "attempt"
  /** A rollout may be past its deadline or queue_timeout. */
  | "rollout"
  /** A worker's heartbeats may have become late. */
  | "worker"
  /** A rollout's retry_delay has passed: it may be dispatched. */
  | "release"
  /** A retry may now go back to the workers that ran it: dispatch again. */
  | "pump"
  /** A worker's quarantine ended: dispatch again. */
  | "quarantine";

/**
 * Everything time alone can change, each at its due time, and when silence is
 * not yet held against an attempt. It decides when to look; the coordinator
 * decides what a due check means (the verdicts are domain functions).
 */
export class Watchdog {
  readonly timers = new DueTimers<TimerKind>();
  /** Until then, silence is not held against inheritedAttempts: their runners are reconnecting after a restart. */
  private reconnectGraceUntil = -Infinity;
  /** Attempts that were in flight when this process started on a store that outlived the previous one. */
  private inheritedAttempts = new Set<string>();

  constructor(
    private readonly liveness: Liveness,
    private readonly defaultUnresponsiveMs: Millis,
    private readonly brake: MassDropBrake,
  ) {}

  /** Arms the timers on the real event loop (servers; tests with a manual clock call the coordinator's runWatchdog). */
  start(clock: Clock, fire: () => Promise<void>, onError: (error: unknown) => void) {
    return startTimerDriver(this.timers, clock, fire, onError);
  }

  takeDue(now: Millis) {
    return this.timers.takeDue(now);
  }

  /** After a restart: the attempts in flight then get one grace period for their runners to come back. */
  inherit(attemptIds: Iterable<string>, graceUntil: Millis) {
    this.inheritedAttempts = new Set(attemptIds);
    if (this.inheritedAttempts.size > 0) this.reconnectGraceUntil = graceUntil;
  }

  /**
   * Until when silence is not held against an attempt because its runner may
   * still come back (undefined when it is not): after a restart, for attempts
   * that were in flight before it, and while the mass-drop brake is engaged,
   * for a runner that lost its stream.
   */
  silenceHeldUntil(attempt: Attempt, attachment: Attachment | undefined, now: Millis): Millis | undefined {
    if (now <= this.reconnectGraceUntil && this.inheritedAttempts.has(attempt.attemptId)) return this.reconnectGraceUntil;
    if (this.brake.engaged(now) && attachment === "lost") return this.brake.releasesAt();
    return undefined;
  }

  attemptChecked(attempt: Attempt, rollout: Rollout) {
    const due = watchdogDue(attempt, rollout, this.defaultUnresponsiveMs);
    if (due === undefined) this.timers.cancel("attempt", attempt.attemptId);
    else this.timers.scheduleNoLaterThan("attempt", attempt.attemptId, due);
  }

  attemptEnded(attemptId: string) {
    this.timers.cancel("attempt", attemptId);
  }

  rolloutClock(rollout: Rollout) {
    const due = rolloutExpiryDue(rollout);
    if (due === undefined) this.timers.cancel("rollout", rollout.rolloutId);
    else this.timers.schedule("rollout", rollout.rolloutId, due);
  }

  workerLateness(record: WorkerRecord) {
    const due = latenessDue(record, this.liveness);
    if (due !== undefined) this.timers.scheduleNoLaterThan("worker", record.worker.workerId, due);
  }

  schedule(kind: "attempt" | "release" | "pump" | "quarantine", id: string, due: Millis) {
    this.timers.schedule(kind, id, due);
  }

  /** A pump at `due` at the latest (another timer for the same id may be earlier). */
  pumpNoLaterThan(id: string, due: Millis) {
    this.timers.scheduleNoLaterThan("pump", id, due);
  }

  cancel(kind: "release" | "pump", id: string) {
    this.timers.cancel(kind, id);
  }
}
