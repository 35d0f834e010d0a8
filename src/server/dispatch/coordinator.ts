import { create, equals } from "@bufbuild/protobuf";
import { type Attempt, AttemptErrorKind, AttemptStatus } from "../../gen/runnerline/v1/attempt_pb.js";
import {
  type EnqueueRolloutRequest,
  EnqueueRolloutRequestSchema,
  type Rollout,
  RolloutStatus,
} from "../../gen/runnerline/v1/rollout_pb.js";
import { type SessionResponse, SessionResponseSchema } from "../../gen/runnerline/v1/runner_pb.js";
import { type Worker, WorkerStatus } from "../../gen/runnerline/v1/worker_pb.js";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import {
  type AttemptReport,
  abortAttempt,
  applyReport,
  expireAttempt,
  isAttemptActive,
  isAttemptCurrent,
  isRepeatedOutcome,
  newAttempt,
  recordLateReport,
  recordSignOfLife,
  watchdogVerdict,
} from "../domain/attempt.js";
import { DomainError, failedPrecondition, notFound } from "../domain/errors.js";
import { newAttemptId, newRolloutId } from "../domain/ids.js";
import {
  cancelRollout,
  dispatchRollout,
  expireRollout,
  followAttempt,
  hasRolloutClock,
  isRolloutQueued,
  isRolloutTerminal,
  newRollout,
  rolloutEffects,
  rolloutExpiry,
} from "../domain/rollout.js";
import { type Clock, msOf, toTimestamp } from "../domain/time.js";
import {
  attachSession,
  detachSession,
  type HeartbeatData,
  holdAttempt,
  type Liveness,
  newWorkerRecord,
  recordHeartbeat,
  recordWorkRequest,
  releaseAttempt,
  type SessionOpening,
  settle,
  type WorkerRecord,
} from "../domain/worker.js";
import type { Store } from "../store/store.js";
import { Effects } from "./effects.js";
import { MassDropBrake } from "./mass-drop-brake.js";
import type { SessionLink } from "./session-link.js";
import type { TransitionObserver } from "./transition-observer.js";

export interface CoordinatorOptions {
  store: Store;
  clock: Clock;
  heartbeatIntervalMs: number;
  /** Heartbeats later than this make a worker UNKNOWN. */
  heartbeatGraceMs: number;
  /** Silence after which an attempt becomes UNRESPONSIVE when its rollout sets no unresponsive_timeout. */
  defaultUnresponsiveMs: number;
  /** The mass-drop brake: fleets smaller than this are never braked (default 10). */
  brakeMinFleet?: number;
  /** How long the brake holds UNRESPONSIVE verdicts for dropped runners (default 4 × the heartbeat grace). */
  brakeHoldMs?: number;
  log?: (line: string) => void;
  /** Told of every rollout, attempt and worker change (fleet counters, metrics, event log). */
  observer?: TransitionObserver;
}

/**
 * The single writer: applies every transition (domain functions) to the
 * store, and turns their consequences into actions — assignments pushed to
 * waiting runners, cancellations, woken waiters. Services call it; it never
 * knows about transports.
 */
export class Coordinator {
  private readonly store: Store;
  private readonly clock: Clock;
  private readonly liveness: Liveness;
  private readonly sessions = new Map<string, SessionLink>();
  /** Sessions with credits, served round-robin so waiting runners are treated fairly. */
  private waiting: SessionLink[] = [];
  private readonly finishWaiters = new Map<string, Set<() => void>>();
  private readonly workerListeners = new Set<(worker: Worker) => void>();
  /** Until then, silence is not held against attempts: their runners are reconnecting after a restart. */
  private reconnectGraceUntil = -Infinity;
  private readonly brake: MassDropBrake;
  /** Non-terminal rollouts with a deadline or queue_timeout, for the watchdog. */
  private readonly clockedRollouts = new Set<string>();
  /** Set when the server shuts down: no more dispatching. */
  private draining = false;
  private readonly sessionsGone = new Set<() => void>();

  constructor(private readonly options: CoordinatorOptions) {
    this.store = options.store;
    this.clock = options.clock;
    this.liveness = { heartbeatGraceMs: options.heartbeatGraceMs };
    this.brake = new MassDropBrake({
      windowMs: options.heartbeatGraceMs,
      minFleet: options.brakeMinFleet ?? 10,
      holdMs: options.brakeHoldMs ?? 4 * options.heartbeatGraceMs,
    });
  }

  // ---- rollouts ----------------------------------------------------------

  /** Enqueues all or none; a repeated idempotency key returns the existing rollout. */
  async enqueue(requests: EnqueueRolloutRequest[]): Promise<Rollout[]> {
    const now = this.clock.now();
    const claimed = new Set<string>();
    const plan = requests.map((request) => {
      if (request.rolloutId === "") return { request, existing: undefined };
      const existing = this.store.getRollout(request.rolloutId);
      if (existing !== undefined && !sameEnqueueRequest(existing, request)) {
        throw new DomainError("already_exists", `rollout ${request.rolloutId} exists with different content`);
      }
      if (existing === undefined && claimed.has(request.rolloutId)) {
        throw new DomainError("already_exists", `rollout ${request.rolloutId} appears twice in the request`);
      }
      claimed.add(request.rolloutId);
      return { request, existing };
    });
    const fx = new Effects();
    const rollouts = plan.map(({ request, existing }) => {
      if (existing !== undefined) return existing;
      const rollout = newRollout(request, request.rolloutId || this.unusedRolloutId(), now);
      this.saveRollout(undefined, rollout, fx);
      return rollout;
    });
    this.pump(now, fx);
    await this.settle(fx);
    return rollouts;
  }

  getRollout(rolloutId: string): Rollout {
    const rollout = this.store.getRollout(rolloutId);
    if (rollout === undefined) throw notFound(`rollout ${rolloutId} not found`);
    return rollout;
  }

  async cancel(rolloutId: string): Promise<Rollout> {
    const now = this.clock.now();
    const before = this.getRollout(rolloutId);
    const fx = new Effects();
    const cancelled = cancelRollout(before, now);
    this.endRollout(before, cancelled, AttemptErrorKind.CANCELLED, "rollout cancelled", now, fx);
    await this.settle(fx);
    return cancelled;
  }

  /** A rollout ended from outside its attempts: its running attempt fails and its runner is told to stop. */
  private endRollout(
    before: Rollout,
    after: Rollout,
    kind: AttemptErrorKind.CANCELLED | AttemptErrorKind.DEADLINE_EXCEEDED,
    reason: string,
    now: number,
    fx: Effects,
  ) {
    this.saveRollout(before, after, fx);
    const attempt = before.latestAttemptId ? this.store.getAttempt(before.latestAttemptId) : undefined;
    if (attempt !== undefined && isAttemptActive(attempt.status)) {
      this.saveAttempt(attempt, abortAttempt(attempt, kind, reason, now), now, fx);
      this.sendTo(attempt.workerId, cancelMessage(attempt.attemptId, reason), fx);
    }
  }

  /** Unary pull: takes the head of the queue for `workerId` (undefined when empty). */
  async dequeueFor(workerId: string): Promise<{ rollout: Rollout; attempt: Attempt } | undefined> {
    const now = this.clock.now();
    const fx = new Effects();
    this.updateWorker(workerId, now, (record) => recordWorkRequest(record, this.liveness, now));
    const rolloutId = this.draining ? undefined : this.nextQueuedRollout();
    const assigned = rolloutId === undefined ? undefined : this.dispatch(rolloutId, workerId, now, fx);
    await this.settle(fx);
    return assigned;
  }

  /** Resolves with the finished ones among `rolloutIds` once all have finished, the timeout passes or `signal` aborts. */
  async waitFor(rolloutIds: string[], timeoutMs: number | undefined, signal: AbortSignal): Promise<Rollout[]> {
    for (const id of rolloutIds) this.getRollout(id);
    const finished = () => rolloutIds.map((id) => this.getRollout(id)).filter((r) => isRolloutTerminal(r.status));
    const pending = new Set(rolloutIds.filter((id) => !isRolloutTerminal(this.getRollout(id).status)));
    if (pending.size === 0 || timeoutMs === 0 || signal.aborted) return finished();
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        for (const id of rolloutIds) this.finishWaiters.get(id)?.delete(onFinished);
        resolve();
      };
      const onFinished = () => {
        for (const id of pending) if (isRolloutTerminal(this.getRollout(id).status)) pending.delete(id);
        if (pending.size === 0) done();
      };
      const timer = timeoutMs === undefined ? undefined : setTimeout(done, timeoutMs);
      signal.addEventListener("abort", done);
      for (const id of pending) {
        let waiters = this.finishWaiters.get(id);
        if (waiters === undefined) this.finishWaiters.set(id, (waiters = new Set()));
        waiters.add(onFinished);
      }
    });
    return finished();
  }

  // ---- attempts ----------------------------------------------------------

  getAttempt(attemptId: string): Attempt {
    const attempt = this.store.getAttempt(attemptId);
    if (attempt === undefined) throw notFound(`attempt ${attemptId} not found`);
    return attempt;
  }

  /**
   * A runner's report. Only a current attempt moves its rollout; a report
   * about one that is no longer current is recorded on it and refused with
   * FAILED_PRECONDITION (after the record is durable).
   */
  async report(
    attemptId: string,
    report: AttemptReport,
    guard: { workerId?: string; expectedVersion?: bigint } = {},
  ): Promise<Attempt> {
    const now = this.clock.now();
    const attempt = this.getAttempt(attemptId);
    if (guard.workerId !== undefined && attempt.workerId !== guard.workerId) {
      throw failedPrecondition(`attempt ${attemptId} belongs to worker ${attempt.workerId}, not ${guard.workerId}`);
    }
    if (guard.expectedVersion !== undefined && guard.expectedVersion !== attempt.version) {
      throw new DomainError(
        "aborted",
        `attempt ${attemptId} is at version ${attempt.version}, not the expected ${guard.expectedVersion}`,
      );
    }
    const rollout = this.getRollout(attempt.rolloutId);
    const fx = new Effects();
    if (isAttemptCurrent(attempt, rollout)) {
      const updated = applyReport(attempt, report, now);
      this.saveAttempt(attempt, updated, now, fx);
      await this.settle(fx);
      return updated;
    }
    if (isRepeatedOutcome(attempt, report)) return attempt;
    this.store.putAttempt(recordLateReport(attempt, report, now));
    await this.settle(fx);
    throw failedPrecondition(
      `attempt ${attemptId} is no longer current (attempt ${AttemptStatus[attempt.status]}, rollout ${RolloutStatus[rollout.status]}); the report was recorded as late_status`,
    );
  }

  // ---- workers -----------------------------------------------------------

  getWorker(workerId: string): Worker {
    const record = this.store.getWorker(workerId);
    if (record === undefined) throw notFound(`worker ${workerId} not found`);
    return record.worker;
  }

  /**
   * Telemetry, plus a sign of life for each listed attempt the worker still
   * holds. A listed attempt that is no longer current gets a Cancel back, so
   * the runner stops spending its machine on it.
   */
  async heartbeat(workerId: string, data: HeartbeatData, attemptIds: readonly string[] = []): Promise<Worker> {
    const now = this.clock.now();
    const fx = new Effects();
    const record = this.updateWorker(workerId, now, (r) => recordHeartbeat(r, data, this.liveness, now));
    for (const attemptId of attemptIds) {
      const attempt = this.store.getAttempt(attemptId);
      if (attempt === undefined || attempt.workerId !== workerId) continue;
      const rollout = this.store.getRollout(attempt.rolloutId);
      if (rollout !== undefined && isAttemptCurrent(attempt, rollout)) {
        this.saveAttempt(attempt, recordSignOfLife(attempt, now), now, fx);
      } else {
        this.sendTo(workerId, cancelMessage(attemptId, "the attempt is no longer current on the server"), fx);
      }
    }
    await this.settle(fx);
    return record.worker;
  }

  /** Notifies `listener` of every status or assignment change of any worker; returns the unsubscribe. */
  watchWorkers(listener: (worker: Worker) => void): () => void {
    this.workerListeners.add(listener);
    return () => this.workerListeners.delete(listener);
  }

  // ---- runner sessions ---------------------------------------------------

  /**
   * Hello: attaches the session (replacing an older one of the same worker),
   * welcomes it, and sorts the attempts it says it still runs into resumed
   * ones and ones it must cancel. Attempts the server thinks it holds but it
   * does not list were lost with its previous process: UNRESPONSIVE.
   */
  async openSession(link: SessionLink, opening: SessionOpening, runningAttemptIds: readonly string[]) {
    const now = this.clock.now();
    const fx = new Effects();
    const previous = this.sessions.get(link.workerId);
    if (previous !== undefined) {
      this.forgetSession(previous);
      previous.close("aborted", `replaced by a newer session (${link.sessionId}) for worker ${link.workerId}`);
    }
    this.sessions.set(link.workerId, link);
    const record = this.updateWorker(link.workerId, now, (r) => attachSession(r, opening, this.liveness, now));
    const listed = new Set(runningAttemptIds);
    for (const attemptId of record.worker.currentAttemptIds) {
      if (listed.has(attemptId)) continue;
      const attempt = this.store.getAttempt(attemptId);
      if (attempt === undefined) continue;
      const lost = expireAttempt(attempt, AttemptStatus.UNRESPONSIVE, "the runner reconnected without it", now);
      this.saveAttempt(attempt, lost, now, fx);
    }
    const resumed: string[] = [];
    const cancels: SessionResponse[] = [];
    for (const attemptId of listed) {
      const attempt = this.store.getAttempt(attemptId);
      const rollout = attempt && this.store.getRollout(attempt.rolloutId);
      if (attempt !== undefined && rollout !== undefined && attempt.workerId === link.workerId && isAttemptCurrent(attempt, rollout)) {
        this.saveAttempt(attempt, recordSignOfLife(attempt, now), now, fx);
        resumed.push(attemptId);
      } else {
        cancels.push(cancelMessage(attemptId, "the server no longer counts this attempt as yours"));
      }
    }
    const welcome = create(SessionResponseSchema, {
      message: {
        case: "welcome",
        value: {
          sessionId: link.sessionId,
          heartbeatInterval: durationFromMs(this.options.heartbeatIntervalMs),
          serverTime: toTimestamp(now),
          resumedAttemptIds: resumed,
        },
      },
    });
    await this.settle(fx, () => {
      link.send(welcome);
      for (const cancel of cancels) link.send(cancel);
    });
  }

  /** Ready: the runner can take `slots` more assignments now. */
  async grantCredits(link: SessionLink, slots: number) {
    if (!this.isLive(link) || link.leaving) return;
    const now = this.clock.now();
    const fx = new Effects();
    this.updateWorker(link.workerId, now, (r) => recordWorkRequest(r, this.liveness, now));
    const wasWaiting = link.credits > 0;
    link.credits += slots;
    if (!wasWaiting) this.waiting.push(link);
    this.pump(now, fx);
    await this.settle(fx);
  }

  /** Goodbye: finish what it holds, take nothing new. */
  goodbye(link: SessionLink) {
    link.leaving = true;
    link.credits = 0;
  }

  /** The stream ended; a newer session of the same worker may already have taken over. */
  async closeSession(link: SessionLink) {
    if (!this.isLive(link)) return;
    this.forgetSession(link);
    const now = this.clock.now();
    if (!link.leaving && !this.draining) {
      const engaged = this.brake.recordDrop(now, this.sessions.size);
      if (engaged !== undefined) this.options.log?.(engaged);
    }
    const fx = new Effects();
    this.updateWorker(link.workerId, now, (r) => detachSession(r, link.leaving, this.liveness, now));
    await this.settle(fx);
  }

  private isLive(link: SessionLink) {
    return this.sessions.get(link.workerId) === link;
  }

  private forgetSession(link: SessionLink) {
    this.sessions.delete(link.workerId);
    link.credits = 0;
    this.waiting = this.waiting.filter((waiting) => waiting !== link);
    if (this.sessions.size === 0) for (const gone of this.sessionsGone) gone();
  }

  // ---- shutdown ----------------------------------------------------------

  /**
   * Stops dispatching and tells every runner the server is going away; they
   * finish what they hold, report, and close. Resolves when all sessions have
   * closed or `timeoutMs` has passed, whichever is first.
   */
  async drain(reason: string, timeoutMs: number): Promise<{ remaining: number }> {
    this.draining = true;
    const drainMessage = create(SessionResponseSchema, { message: { case: "drain", value: { reason } } });
    for (const link of this.sessions.values()) link.send(drainMessage);
    if (this.sessions.size > 0) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.sessionsGone.delete(done);
          resolve();
        };
        const timer = setTimeout(done, timeoutMs);
        this.sessionsGone.add(done);
      });
    }
    await this.store.commit();
    return { remaining: this.sessions.size };
  }

  /**
   * Called once at start on a store that outlived a previous process: the
   * sessions recorded there are gone, so their workers are UNKNOWN until they
   * reconnect, and in-flight attempts get one grace period for their runners
   * to reconnect and claim them (Hello.running_attempt_ids) before silence
   * counts against them.
   */
  async recover() {
    const now = this.clock.now();
    const allStatuses = [WorkerStatus.IDLE, WorkerStatus.BUSY, WorkerStatus.UNKNOWN, WorkerStatus.OFFLINE];
    for (const record of this.store.workersWithStatus(allStatuses)) {
      if (record.attachment !== "open") continue;
      this.updateWorker(record.worker.workerId, now, (r) => detachSession(r, false, this.liveness, now));
    }
    this.reconnectGraceUntil = now + this.options.heartbeatGraceMs;
    const unfinished = [RolloutStatus.QUEUING, RolloutStatus.REQUEUING, RolloutStatus.PREPARING, RolloutStatus.RUNNING];
    const everything = { orderBy: [{ field: "rollout_id", descending: false }], offset: 0, limit: Number.MAX_SAFE_INTEGER };
    for (const rollout of this.store.listRollouts({ filter: { statuses: unfinished, idContains: "" }, ...everything }).items) {
      if (hasRolloutClock(rollout)) this.clockedRollouts.add(rollout.rolloutId);
    }
    await this.store.commit();
  }

  // ---- watchdog ----------------------------------------------------------

  /**
   * Ends attempts that ran too long or went silent, and re-derives the status
   * of workers whose heartbeats may have become late. Runs on its own timer
   * (see Watchdog) with the coordinator's clock.
   */
  async runWatchdog() {
    const now = this.clock.now();
    const fx = new Effects();
    for (const rolloutId of this.clockedRollouts) {
      const rollout = this.getRollout(rolloutId);
      const reason = rolloutExpiry(rollout, now);
      if (reason === undefined) continue;
      this.endRollout(rollout, expireRollout(rollout, reason, now), AttemptErrorKind.DEADLINE_EXCEEDED, reason, now, fx);
    }
    for (const attempt of this.store.activeAttempts()) {
      const rollout = this.store.getRollout(attempt.rolloutId);
      if (rollout === undefined) continue;
      const verdict = watchdogVerdict(attempt, rollout, this.options.defaultUnresponsiveMs, now);
      if (verdict === undefined) continue;
      if (verdict.status === AttemptStatus.UNRESPONSIVE && this.holdsSilence(attempt, now)) continue;
      this.saveAttempt(attempt, expireAttempt(attempt, verdict.status, verdict.message, now), now, fx);
      // A runner that is still there should stop spending its machine on it.
      this.sendTo(attempt.workerId, cancelMessage(attempt.attemptId, verdict.message), fx);
    }
    const heardSince = now - this.options.heartbeatGraceMs;
    for (const record of this.store.workersWithStatus([WorkerStatus.IDLE, WorkerStatus.BUSY])) {
      // Only lateness changes with time alone, and a session heard from within
      // the grace is not late: its status cannot have changed since it was settled.
      if (record.attachment === "open" && (msOf(record.worker.lastHeartbeatTime) ?? -Infinity) >= heardSince) continue;
      this.updateWorker(record.worker.workerId, now, (r) => settle(r, this.liveness, now));
    }
    await this.settle(fx);
  }

  /**
   * Silence is not held against an attempt while its runner may still come
   * back: after a restart, and while the mass-drop brake is engaged for a
   * runner that lost its stream.
   */
  private holdsSilence(attempt: Attempt, now: number): boolean {
    if (now <= this.reconnectGraceUntil) return true;
    return this.brake.engaged(now) && this.store.getWorker(attempt.workerId)?.attachment === "lost";
  }

  // ---- transitions -------------------------------------------------------

  /** Creates the next attempt of a queued rollout for `workerId`. */
  private dispatch(rolloutId: string, workerId: string, now: number, fx: Effects) {
    const rollout = this.getRollout(rolloutId);
    const attempt = newAttempt(rollout, newAttemptId(), workerId, now);
    this.store.putAttempt(attempt);
    const dispatched = dispatchRollout(rollout, attempt, now);
    this.saveRollout(rollout, dispatched, fx);
    this.updateWorker(workerId, now, (r) => holdAttempt(r, attempt, this.liveness, now));
    return { rollout: dispatched, attempt };
  }

  /** Hands queued rollouts to waiting sessions, one credit each, round-robin. */
  private pump(now: number, fx: Effects) {
    if (this.draining) return;
    while (this.waiting.length > 0 && this.store.queueLength() > 0) {
      const link = this.waiting.shift()!;
      if (!this.isLive(link) || link.leaving || link.credits <= 0) continue;
      const rolloutId = this.nextQueuedRollout();
      if (rolloutId === undefined) {
        this.waiting.unshift(link);
        break;
      }
      const assignment = this.dispatch(rolloutId, link.workerId, now, fx);
      link.credits -= 1;
      if (link.credits > 0) this.waiting.push(link);
      const message = create(SessionResponseSchema, { message: { case: "assignment", value: assignment } });
      fx.add(() => link.send(message));
    }
  }

  private nextQueuedRollout(): string | undefined {
    for (;;) {
      const rolloutId = this.store.popQueue();
      if (rolloutId === undefined) return undefined;
      const rollout = this.store.getRollout(rolloutId);
      if (rollout !== undefined && isRolloutQueued(rollout.status)) return rolloutId;
    }
  }

  private saveRollout(before: Rollout | undefined, after: Rollout, fx: Effects) {
    if (before === after) return;
    this.store.putRollout(after);
    this.options.observer?.rolloutChanged?.(before, after);
    if (hasRolloutClock(after) && !isRolloutTerminal(after.status)) this.clockedRollouts.add(after.rolloutId);
    else this.clockedRollouts.delete(after.rolloutId);
    const effects = rolloutEffects(before, after);
    if (effects.enqueue) this.store.pushQueue(after.rolloutId);
    if (effects.dequeue) this.store.removeFromQueue(after.rolloutId);
    if (effects.finished) fx.add(() => this.wakeFinishWaiters(after.rolloutId));
  }

  /** Stores an attempt change and carries its consequences to its worker and rollout. */
  private saveAttempt(before: Attempt, after: Attempt, now: number, fx: Effects) {
    if (before === after) return;
    this.store.putAttempt(after);
    this.options.observer?.attemptChanged?.(before, after);
    const wasActive = isAttemptActive(before.status);
    const isActive = isAttemptActive(after.status);
    if (wasActive && !isActive) {
      const lost = after.status === AttemptStatus.TIMEOUT || after.status === AttemptStatus.UNRESPONSIVE;
      this.updateWorker(after.workerId, now, (r) => releaseAttempt(r, after, lost, this.liveness, now));
    } else if (!wasActive && isActive) {
      this.updateWorker(after.workerId, now, (r) => holdAttempt(r, after, this.liveness, now));
    }
    const rollout = this.store.getRollout(after.rolloutId);
    if (rollout !== undefined) this.saveRollout(rollout, followAttempt(rollout, after, now), fx);
    if (isRolloutQueued(this.store.getRollout(after.rolloutId)?.status ?? RolloutStatus.UNSPECIFIED)) {
      this.pump(now, fx);
    }
  }

  private updateWorker(workerId: string, now: number, change: (record: WorkerRecord) => WorkerRecord): WorkerRecord {
    const stored = this.store.getWorker(workerId);
    const before = stored ?? newWorkerRecord(workerId, now);
    const after = change(before);
    if (after !== before || stored === undefined) {
      this.store.putWorker(after);
      this.options.observer?.workerChanged?.(stored, after);
    }
    if (after.worker.version !== before.worker.version) {
      for (const listener of this.workerListeners) listener(after.worker);
    }
    return after;
  }

  private sendTo(workerId: string, message: SessionResponse, fx: Effects) {
    const link = this.sessions.get(workerId);
    if (link !== undefined) fx.add(() => link.send(message));
  }

  private wakeFinishWaiters(rolloutId: string) {
    const waiters = this.finishWaiters.get(rolloutId);
    if (waiters === undefined) return;
    this.finishWaiters.delete(rolloutId);
    for (const wake of waiters) wake();
  }

  /** Waits until the transitions are durable, then acts on them. */
  private async settle(fx: Effects, then?: () => void) {
    await this.store.commit();
    then?.();
    fx.run();
  }

  private unusedRolloutId(): string {
    for (;;) {
      const id = newRolloutId();
      if (this.store.getRollout(id) === undefined) return id;
    }
  }
}

function cancelMessage(attemptId: string, reason: string): SessionResponse {
  return create(SessionResponseSchema, { message: { case: "cancel", value: { attemptId, reason } } });
}

/** Whether a repeated enqueue with the same idempotency key asks for the same rollout. */
function sameEnqueueRequest(existing: Rollout, request: EnqueueRolloutRequest): boolean {
  const asRequest = create(EnqueueRolloutRequestSchema, {
    input: existing.input,
    mode: existing.mode,
    resourcesId: existing.resourcesId,
    metadata: existing.metadata,
    config: existing.config,
    rolloutId: existing.rolloutId,
  });
  const normalized = create(EnqueueRolloutRequestSchema, {
    ...request,
    metadata: request.metadata ?? {},
    config: request.config ?? existing.config,
  });
  return equals(EnqueueRolloutRequestSchema, asRequest, normalized);
}
