import { AttemptErrorKind, AttemptStatus } from "../../../gen/runnerline/v1/attempt_pb.js";
import type { Rollout } from "../../../gen/runnerline/v1/rollout_pb.js";
import { WorkerStatus } from "../../../gen/runnerline/v1/worker_pb.js";
import { expireAttempt, isAttemptActive, watchdogVerdict } from "../../domain/attempt.js";
import { DomainError } from "../../domain/errors.js";
import { forgetDue, forgetWorker } from "../../domain/forget.js";
import { expireRollout, rolloutExpiry } from "../../domain/rollout.js";
import type { Clock, Millis } from "../../domain/time.js";
import { type Liveness, newWorkerRecord, settle } from "../../domain/worker.js";
import type { Store } from "../../store/store.js";
import { NO_CHANGES } from "../../transitions/changes.js";
import type { Judge } from "../reactions/judge.js";
import type { Pump } from "../reactions/pump.js";
import type { Routing } from "../reactions/routing.js";
import type { SessionRegistry } from "../sessions/registry.js";
import { Effects } from "../turn/effects.js";
import type { Turn } from "../turn/turn.js";
import type { Watchdog } from "./watchdog.js";

/** How often a server sharing its store reads the queue's ids again (lost events, rollouts dispatched elsewhere). */
const RESYNC_MS = 2_000;

export interface TimerChecksOptions {
  turn: Turn;
  judge: Judge;
  pump: Pump;
  sessions: SessionRegistry;
  routing: Routing;
  watchdog: Watchdog;
  /** Silence after which an attempt becomes UNRESPONSIVE when its rollout sets no unresponsive_timeout. */
  defaultUnresponsiveMs: number;
  /** Reads the queue again (servers sharing a store; see recovery/replica-events.ts); absent for an embedded store. */
  resync?: () => void;
  log: (line: string) => void;
}

/**
 * What time alone changes: the checks the Watchdog finds due — attempts that
 * ran too long or went silent, rollout clocks (deadline, queue_timeout),
 * workers whose heartbeats became late, retries whose delay passed — each run
 * as a turn, and the clock that arms them on the event loop; and, for
 * retention's sweep, long-silent UNKNOWN workers forgotten (--forget-after).
 */
export class TimerChecks {
  private readonly turn: Turn;
  private readonly store: Store;
  private readonly clock: Clock;
  private readonly liveness: Liveness;
  private readonly judge: Judge;
  private readonly pump: Pump;
  private readonly sessions: SessionRegistry;
  private readonly routing: Routing;
  private readonly watchdog: Watchdog;
  private readonly defaultUnresponsiveMs: number;
  private readonly resync: (() => void) | undefined;
  private readonly log: (line: string) => void;

  constructor(options: TimerChecksOptions) {
    this.turn = options.turn;
    this.store = options.turn.store;
    this.clock = options.turn.clock;
    this.liveness = options.turn.liveness;
    this.judge = options.judge;
    this.pump = options.pump;
    this.sessions = options.sessions;
    this.routing = options.routing;
    this.watchdog = options.watchdog;
    this.defaultUnresponsiveMs = options.defaultUnresponsiveMs;
    this.resync = options.resync;
    this.log = options.log;
  }

  /** Arms the timers on the real event loop (servers; tests with a manual clock call runWatchdog instead). */
  start(onError: (error: unknown) => void) {
    const timers = this.watchdog.start(this.clock, () => this.runWatchdog(), onError);
    if (this.resync === undefined) return timers;
    // Events can be lost (a dropped LISTEN connection, a crash between commit and notify): look again now and then.
    const resync = setInterval(this.resync, RESYNC_MS * (0.75 + Math.random() / 2));
    resync.unref();
    return {
      stop() {
        clearInterval(resync);
        timers.stop();
      },
    };
  }

  /**
   * Runs every check that is due (see Watchdog): attempts that ran too long
   * or went silent, rollouts past their deadline or queue_timeout, workers
   * whose heartbeats became late, retries whose delay passed. A check that
   * finds nothing due yet (a sign of life came since) reschedules itself.
   * Servers run it from start; tests call it after advancing a manual clock.
   */
  async runWatchdog() {
    const now = this.clock.now();
    const fx = new Effects();
    for (const { kind, id } of this.watchdog.takeDue(now)) {
      switch (kind) {
        case "attempt":
          await this.checkAttempt(id, now, fx);
          break;
        case "rollout":
          await this.checkRolloutClock(id, now, fx);
          break;
        case "worker":
          await this.checkWorker(id, now, fx);
          break;
        case "release":
          await this.releaseDelayed(id);
          break;
        case "pump":
        case "quarantine":
          break;
      }
    }
    await this.pump.pump(now, fx);
    await this.turn.settle(fx);
  }

  private async checkAttempt(attemptId: string, now: Millis, fx: Effects) {
    const attempt = await this.store.getAttempt(attemptId);
    const rollout = attempt && (await this.store.getRollout(attempt.rolloutId));
    if (attempt === undefined || rollout === undefined || !isAttemptActive(attempt.status)) return;
    const verdict = watchdogVerdict(attempt, rollout, this.defaultUnresponsiveMs, now);
    if (verdict === undefined) return this.watchdog.attemptChecked(attempt, rollout);
    if (verdict.status === AttemptStatus.UNRESPONSIVE) {
      const attachment = (await this.store.getWorker(attempt.workerId))?.attachment;
      const heldUntil = this.watchdog.silenceHeldUntil(attempt, attachment, now);
      if (heldUntil !== undefined) return this.watchdog.schedule("attempt", attemptId, heldUntil + 1);
    }
    // The verdict is taken again inside the operation, on the rows as they are then.
    const changes = await this.store.changeAttempt(attemptId, undefined, (current, currentRollout) => {
      if (!isAttemptActive(current.status) || currentRollout === undefined) return current;
      const again = watchdogVerdict(current, currentRollout, this.defaultUnresponsiveMs, now);
      return again === undefined ? current : expireAttempt(current, again.status, again.message, now);
    }, this.turn.context(now));
    this.turn.absorb(changes, now, fx);
    // A runner that is still there should stop spending its machine on it.
    this.judge.cancelAbortedAttempts(changes, verdict.message, fx);
    await this.judge.judgeEnded(changes, now, fx);
  }

  private async checkRolloutClock(rolloutId: string, now: Millis, fx: Effects) {
    let reason: string | undefined;
    let seen: Rollout | undefined;
    const changes = await this.store
      .changeRollout(rolloutId, (rollout) => {
        seen = rollout;
        reason = rolloutExpiry(rollout, now);
        if (reason === undefined) return undefined;
        return { after: expireRollout(rollout, reason, now), attemptErrorKind: AttemptErrorKind.DEADLINE_EXCEEDED, reason };
      }, this.turn.context(now))
      .catch((error: unknown) => {
        if (error instanceof DomainError && error.kind === "not_found") return NO_CHANGES;
        throw error;
      });
    // Not due yet (a retry moved its clock, say): check again when it is.
    if (reason === undefined && seen !== undefined) this.watchdog.rolloutClock(seen);
    this.turn.absorb(changes, now, fx);
    if (reason !== undefined) this.judge.cancelAbortedAttempts(changes, reason, fx);
    await this.judge.judgeEnded(changes, now, fx);
  }

  private async checkWorker(workerId: string, now: Millis, fx: Effects) {
    // The server that holds a worker's session judges its lateness: it reads the heartbeats, where this one sees the
    // telemetry only as the holder last wrote it behind, and would turn a healthy worker UNKNOWN, or at least start a
    // transaction to find out, for every worker of the fleet. A holder that dies is the leader's (Replication).
    if (this.sessions.get(workerId) === undefined && this.routing.hasRemoteSession(workerId)) return;
    if ((await this.store.getWorker(workerId)) === undefined) return;
    const settled = await this.store.changeWorker(workerId, undefined, (r) =>
      r === undefined ? newWorkerRecord(workerId, now) : settle(r, this.liveness, now),
    );
    this.turn.absorb(settled, now, fx);
  }

  /**
   * Forgets UNKNOWN workers with no attempts, silent for `forgetAfterMs`
   * (domain/forget.ts): they turn OFFLINE with a reason, and retention takes
   * them from there. Returns how many.
   */
  async forgetSilentWorkers(forgetAfterMs: Millis): Promise<number> {
    const now = this.clock.now();
    const fx = new Effects();
    let forgotten = 0;
    for (const record of await this.store.workersWithStatus([WorkerStatus.UNKNOWN])) {
      const due = forgetDue(record, forgetAfterMs);
      if (due === undefined || now < due || this.sessions.get(record.worker.workerId) !== undefined) continue;
      // Judged again inside the operation, on the row as it is then.
      const changes = await this.store.changeWorker(record.worker.workerId, undefined, (r) =>
        forgetWorker(r ?? record, forgetAfterMs, this.liveness, now),
      );
      this.turn.absorb(changes, now, fx);
      const after = changes.workers[0]?.after.worker;
      if (after?.status !== WorkerStatus.OFFLINE) continue;
      forgotten++;
      this.log(`worker ${after.workerId} ${after.statusReason}`);
    }
    await this.turn.settle(fx);
    return forgotten;
  }

  private async releaseDelayed(rolloutId: string) {
    // It joins the back of the queue now, in the store's order too.
    if (this.routing.release(rolloutId)) await this.store.moveToBackOfQueue(rolloutId);
  }
}
