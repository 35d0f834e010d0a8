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
  recordLateSignOfLife,
  recordSignOfLife,
  watchdogDue,
  watchdogVerdict,
} from "../domain/attempt.js";
import { DomainError, failedPrecondition, notFound } from "../domain/errors.js";
import { newAttemptId, newRolloutId } from "../domain/ids.js";
import {
  cancelRollout,
  dispatchableAt,
  dispatchRollout,
  expireRollout,
  followAttempt,
  isRolloutQueued,
  isRolloutTerminal,
  maxAttempts,
  newRollout,
  rolloutEffects,
  rolloutExpiry,
  rolloutExpiryDue,
} from "../domain/rollout.js";
import { type Labels, labelSetKey, labelsMatch } from "../domain/labels.js";
import {
  DEFAULT_QUARANTINE_POLICY,
  nextFailureStreak,
  type QuarantinePolicy,
  quarantineDecision,
  successClearsQuarantine,
  workerOutcome,
} from "../domain/quarantine.js";
import { type Clock, type Millis, msOf, toTimestamp } from "../domain/time.js";
import {
  attachSession,
  clearQuarantine,
  detachSession,
  type HeartbeatData,
  holdAttempt,
  isQuarantined,
  lastHeardMs,
  latenessDue,
  type Liveness,
  newWorkerRecord,
  quarantineWorker,
  recordHeartbeat,
  recordWorkRequest,
  releaseAttempt,
  type SessionOpening,
  settle,
  type WorkerRecord,
} from "../domain/worker.js";
import type { Store } from "../store/store.js";
import { DispatchQueue, type QueueEntry } from "./dispatch-queue.js";
import { DueTimers, startTimerDriver } from "./due-timers.js";
import { Effects } from "./effects.js";
import { MassDropBrake, sessionSpan } from "./mass-drop-brake.js";
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
  /**
   * How long a retry keeps away from the workers that already ran its rollout
   * while other connected workers could take it (default 30 s); after that it
   * may go back.
   */
  retryElsewhereMs?: number;
  /** When failing workers are quarantined (defaults: DEFAULT_QUARANTINE_POLICY). */
  quarantine?: Partial<QuarantinePolicy>;
  /** Sees every recorded heartbeat (the telemetry history); must be cheap and must not throw. */
  onHeartbeat?: (workerId: string, data: HeartbeatData, now: Millis) => void;
  log?: (line: string) => void;
  /** Told of every rollout, attempt and worker change (fleet counters, metrics, event log). */
  observer?: TransitionObserver;
}

export const DEFAULT_RETRY_ELSEWHERE_MS = 30_000;

/** The workers that ran a rollout never dispatched. */
const NOBODY: ReadonlySet<string> = new Set();

/** What a due timer (see DueTimers) stands for; its id is the attempt's, rollout's or worker's. */
type TimerKind =
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
  /** Until then, silence is not held against inheritedAttempts: their runners are reconnecting after a restart. */
  private reconnectGraceUntil = -Infinity;
  /** Attempts that were in flight when this process started on a store that outlived the previous one. */
  private inheritedAttempts = new Set<string>();
  private readonly brake: MassDropBrake;
  /** Queued rollouts that may be dispatched now; the store keeps the same order durably. */
  private readonly queue = new DispatchQueue();
  /** Queued rollouts waiting out their retry_delay, released by a "release" timer. */
  private readonly delayed = new Map<string, QueueEntry>();
  /** Every time-driven check, each at its due time. */
  private readonly timers = new DueTimers<TimerKind>();
  /** Labels of the workers with a live session, for matching rollouts to them. */
  private readonly sessionLabels = new Map<string, Labels>();
  /** Per unfinished rollout that was dispatched, the workers that ran its attempts (see workersThatRan). */
  private readonly ranOn = new Map<string, Set<string>>();
  /** Per worker, the end times of its latest failed attempts in a row (process memory only). */
  private readonly failureStreaks = new Map<string, Millis[]>();
  /** When each worker that carries a quarantine has it lifted (ms), for quarantinedCount. */
  private readonly quarantineEnds = new Map<string, Millis>();
  private readonly quarantinePolicy: QuarantinePolicy;
  private readonly retryElsewhereMs: number;
  /** Set when the server shuts down: no more dispatching. */
  private draining = false;
  private drainMessage: SessionResponse | undefined;
  /** Woken after each transition while draining, to check whether the drain is over. */
  private readonly drainWatchers = new Set<() => void>();

  constructor(private readonly options: CoordinatorOptions) {
    this.store = options.store;
    this.clock = options.clock;
    this.liveness = { heartbeatGraceMs: options.heartbeatGraceMs };
    this.brake = new MassDropBrake({
      windowMs: options.heartbeatGraceMs,
      minFleet: options.brakeMinFleet ?? 10,
      holdMs: options.brakeHoldMs ?? 4 * options.heartbeatGraceMs,
      establishedAfterMs: options.heartbeatIntervalMs,
    });
    this.quarantinePolicy = { ...DEFAULT_QUARANTINE_POLICY, ...options.quarantine };
    this.retryElsewhereMs = options.retryElsewhereMs ?? DEFAULT_RETRY_ELSEWHERE_MS;
    this.load();
  }

  /**
   * Rebuilds what the coordinator keeps in memory from the store: the
   * dispatch queue in its stored order, and a timer for everything that
   * time alone can change.
   */
  private load() {
    const now = this.clock.now();
    for (const rolloutId of this.store.queuedRolloutIds()) {
      const rollout = this.store.getRollout(rolloutId);
      if (rollout !== undefined && isRolloutQueued(rollout.status)) this.queueRollout(rollout, now);
    }
    const unfinished = [RolloutStatus.QUEUING, RolloutStatus.REQUEUING, RolloutStatus.PREPARING, RolloutStatus.RUNNING];
    const everything = { orderBy: [{ field: "rollout_id", descending: false }], offset: 0, limit: Number.MAX_SAFE_INTEGER };
    for (const rollout of this.store.listRollouts({ filter: { statuses: unfinished, idContains: "" }, ...everything }).items) {
      this.scheduleRolloutClock(rollout);
    }
    for (const attempt of this.store.activeAttempts()) {
      const rollout = this.store.getRollout(attempt.rolloutId);
      if (rollout !== undefined) this.scheduleAttemptCheck(attempt, rollout);
    }
    for (const record of this.store.workersWithStatus([WorkerStatus.IDLE, WorkerStatus.BUSY])) {
      const due = latenessDue(record, this.liveness);
      if (due !== undefined) this.timers.scheduleNoLaterThan("worker", record.worker.workerId, due);
    }
  }

  /** Arms the timers on the real event loop (servers; tests with a manual clock call runWatchdog instead). */
  startTimers(onError: (error: unknown) => void) {
    return startTimerDriver(this.timers, this.clock, () => this.runWatchdog(), onError);
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
      this.saveRollout(undefined, rollout, now, fx);
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
    this.saveRollout(before, after, now, fx);
    const attempt = before.latestAttemptId ? this.store.getAttempt(before.latestAttemptId) : undefined;
    const held = attempt !== undefined && isAttemptActive(attempt.status);
    if (held) {
      this.saveAttempt(attempt, abortAttempt(attempt, kind, reason, now), now, fx);
      this.sendTo(attempt.workerId, cancelMessage(attempt.attemptId, reason), fx);
    }
  }

  /** Unary pull: takes the head of the queue for `workerId` (undefined when empty). */
  async dequeueFor(workerId: string): Promise<{ rollout: Rollout; attempt: Attempt } | undefined> {
    const now = this.clock.now();
    const fx = new Effects();
    this.updateWorker(workerId, now, (record) => recordWorkRequest(record, this.liveness, now));
    const entry = this.draining ? undefined : this.pickFor(workerId, now);
    const assigned = entry === undefined ? undefined : this.dispatch(entry.rolloutId, workerId, now, fx);
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
    this.options.onHeartbeat?.(workerId, data, now);
    for (const attemptId of attemptIds) {
      const attempt = this.store.getAttempt(attemptId);
      if (attempt === undefined || attempt.workerId !== workerId) continue;
      const rollout = this.store.getRollout(attempt.rolloutId);
      if (rollout !== undefined && isAttemptCurrent(attempt, rollout)) {
        this.saveAttempt(attempt, recordSignOfLife(attempt, now), now, fx);
      } else {
        this.store.putAttempt(recordLateSignOfLife(attempt, now));
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
    this.sessionLabels.set(link.workerId, opening.labels);
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
      // A runner that reconnects during a drain hears it at once: it may report what it holds, and take nothing new.
      if (this.drainMessage !== undefined) link.send(this.drainMessage);
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
      const span = (l: SessionLink) => sessionSpan(this.store.getWorker(l.workerId)?.worker);
      const engaged = this.brake.recordDrop(now, span(link), () => Array.from(this.sessions.values(), span));
      if (engaged !== undefined) this.options.log?.(engaged);
    }
    const fx = new Effects();
    this.updateWorker(link.workerId, now, (r) => detachSession(r, link.leaving, this.liveness, now));
    // Retries that kept away from the other waiting runners for this one's sake may now go back.
    this.pump(now, fx);
    await this.settle(fx);
  }

  private isLive(link: SessionLink) {
    return this.sessions.get(link.workerId) === link;
  }

  private forgetSession(link: SessionLink) {
    this.sessions.delete(link.workerId);
    this.sessionLabels.delete(link.workerId);
    link.credits = 0;
    this.waiting = this.waiting.filter((waiting) => waiting !== link);
  }

  /** Each open session with the attempts its worker holds: what a drain waits for, and what an abort abandons. */
  openSessions(): { sessionId: string; workerId: string; attemptIds: string[] }[] {
    return [...this.sessions.values()].map((link) => ({
      sessionId: link.sessionId,
      workerId: link.workerId,
      attemptIds: this.store.getWorker(link.workerId)?.worker.currentAttemptIds ?? [],
    }));
  }

  // ---- shutdown ----------------------------------------------------------

  /**
   * Stops dispatching and tells every runner the server is going away; they
   * finish what they hold and report. Resolves as soon as no open session
   * holds an attempt (idle runners may stay connected, or reconnect and be
   * told again: they hold nothing to wait for), or when `timeoutMs` has
   * passed; `held` lists what is still held then.
   */
  async drain(reason: string, timeoutMs: number): Promise<{ held: ReturnType<Coordinator["openSessions"]> }> {
    this.draining = true;
    this.drainMessage = create(SessionResponseSchema, { message: { case: "drain", value: { reason } } });
    for (const link of this.sessions.values()) link.send(this.drainMessage);
    const holding = () => this.openSessions().filter((session) => session.attemptIds.length > 0);
    if (holding().length > 0) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.drainWatchers.delete(check);
          resolve();
        };
        const check = () => {
          if (holding().length === 0) done();
        };
        const timer = setTimeout(done, timeoutMs);
        this.drainWatchers.add(check);
      });
    }
    await this.store.commit();
    return { held: holding() };
  }

  /**
   * Called once at start on a store that outlived a previous process: the
   * sessions recorded there died with it (when their workers were last heard
   * from), so their workers are UNKNOWN until they reconnect, and the
   * attempts in flight then — only those — get one grace period for their
   * runners to reconnect and claim them (Hello.running_attempt_ids) before
   * silence counts against them.
   */
  async recover() {
    const now = this.clock.now();
    const allStatuses = [WorkerStatus.IDLE, WorkerStatus.BUSY, WorkerStatus.UNKNOWN, WorkerStatus.OFFLINE];
    for (const record of this.store.workersWithStatus(allStatuses)) {
      this.trackQuarantine(record);
      if (record.attachment !== "open") continue;
      const endedAt = Math.min(now, lastHeardMs(record.worker) ?? now);
      this.updateWorker(record.worker.workerId, now, (r) => detachSession(r, false, this.liveness, now, endedAt));
    }
    this.inheritedAttempts = new Set(this.store.activeAttempts().map((attempt) => attempt.attemptId));
    if (this.inheritedAttempts.size > 0) this.reconnectGraceUntil = now + this.options.heartbeatGraceMs;
    await this.store.commit();
  }

  // ---- timers -----------------------------------------------------------

  /**
   * Runs every check that is due (see DueTimers): attempts that ran too long
   * or went silent, rollouts past their deadline or queue_timeout, workers
   * whose heartbeats became late, retries whose delay passed. A check that
   * finds nothing due yet (a sign of life came since) reschedules itself.
   * Servers run it from startTimers; tests call it after advancing a manual clock.
   */
  async runWatchdog() {
    const now = this.clock.now();
    const fx = new Effects();
    for (const { kind, id } of this.timers.takeDue(now)) {
      switch (kind) {
        case "attempt":
          this.checkAttempt(id, now, fx);
          break;
        case "rollout":
          this.checkRolloutClock(id, now, fx);
          break;
        case "worker":
          if (this.store.getWorker(id) !== undefined) this.updateWorker(id, now, (r) => settle(r, this.liveness, now));
          break;
        case "release":
          this.releaseDelayed(id);
          break;
        case "pump":
        case "quarantine":
          break;
      }
    }
    this.pump(now, fx);
    await this.settle(fx);
  }

  private checkAttempt(attemptId: string, now: Millis, fx: Effects) {
    const attempt = this.store.getAttempt(attemptId);
    const rollout = attempt && this.store.getRollout(attempt.rolloutId);
    if (attempt === undefined || rollout === undefined || !isAttemptActive(attempt.status)) return;
    const verdict = watchdogVerdict(attempt, rollout, this.options.defaultUnresponsiveMs, now);
    if (verdict === undefined) return this.scheduleAttemptCheck(attempt, rollout);
    if (verdict.status === AttemptStatus.UNRESPONSIVE) {
      const heldUntil = this.silenceHeldUntil(attempt, now);
      if (heldUntil !== undefined) return this.timers.schedule("attempt", attemptId, heldUntil + 1);
    }
    this.saveAttempt(attempt, expireAttempt(attempt, verdict.status, verdict.message, now), now, fx);
    // A runner that is still there should stop spending its machine on it.
    this.sendTo(attempt.workerId, cancelMessage(attempt.attemptId, verdict.message), fx);
  }

  private checkRolloutClock(rolloutId: string, now: Millis, fx: Effects) {
    const rollout = this.store.getRollout(rolloutId);
    if (rollout === undefined) return;
    const reason = rolloutExpiry(rollout, now);
    if (reason === undefined) return this.scheduleRolloutClock(rollout);
    this.endRollout(rollout, expireRollout(rollout, reason, now), AttemptErrorKind.DEADLINE_EXCEEDED, reason, now, fx);
  }

  /**
   * Until when silence is not held against an attempt because its runner may
   * still come back (undefined when it is not): after a restart, for attempts
   * that were in flight before it, and while the mass-drop brake is engaged,
   * for a runner that lost its stream.
   */
  private silenceHeldUntil(attempt: Attempt, now: Millis): Millis | undefined {
    if (now <= this.reconnectGraceUntil && this.inheritedAttempts.has(attempt.attemptId)) return this.reconnectGraceUntil;
    if (this.brake.engaged(now) && this.store.getWorker(attempt.workerId)?.attachment === "lost") return this.brake.releasesAt();
    return undefined;
  }

  private scheduleAttemptCheck(attempt: Attempt, rollout: Rollout) {
    const due = watchdogDue(attempt, rollout, this.options.defaultUnresponsiveMs);
    if (due === undefined) this.timers.cancel("attempt", attempt.attemptId);
    else this.timers.scheduleNoLaterThan("attempt", attempt.attemptId, due);
  }

  private scheduleRolloutClock(rollout: Rollout) {
    const due = rolloutExpiryDue(rollout);
    if (due === undefined) this.timers.cancel("rollout", rollout.rolloutId);
    else this.timers.schedule("rollout", rollout.rolloutId, due);
  }

  // ---- quarantine and routing ---------------------------------------------

  /** Lifts a worker's quarantine (and probation) at once; it may take work again. */
  async releaseWorker(workerId: string): Promise<Worker> {
    const now = this.clock.now();
    const record = this.store.getWorker(workerId);
    if (record === undefined) throw notFound(`worker ${workerId} not found`);
    if (!isQuarantined(record.worker, now) && record.worker.quarantineCount === 0) {
      throw failedPrecondition(`worker ${workerId} is not quarantined`);
    }
    const fx = new Effects();
    const released = this.updateWorker(workerId, now, clearQuarantine);
    this.failureStreaks.delete(workerId);
    this.log(`worker ${workerId} released from quarantine by an operator`);
    this.pump(now, fx);
    await this.settle(fx);
    return released.worker;
  }

  /** Workers quarantined now (for the fleet summary and /metrics): only those ever quarantined are looked at. */
  quarantinedCount(): number {
    const now = this.clock.now();
    let count = 0;
    for (const [workerId, until] of this.quarantineEnds) {
      if (until > now) count++;
      else if (this.store.getWorker(workerId) === undefined) this.quarantineEnds.delete(workerId);
    }
    return count;
  }

  private trackQuarantine(record: WorkerRecord) {
    const until = msOf(record.worker.quarantineUntil);
    if (until === undefined) this.quarantineEnds.delete(record.worker.workerId);
    else this.quarantineEnds.set(record.worker.workerId, until);
  }

  /** Queued rollouts that no connected worker can take: none carries their required labels. */
  unroutableRolloutIds(): string[] {
    const ids: string[] = [];
    const routable = this.routableLabelSets();
    for (const lane of this.queue.lanes()) if (!routable(lane.labels)) ids.push(...lane.rolloutIds);
    for (const entry of this.delayed.values()) if (!routable(entry.requiredLabels)) ids.push(entry.rolloutId);
    return ids;
  }

  /** How many queued rollouts no connected worker can take (see unroutableRolloutIds). */
  unroutableCount(): number {
    let count = 0;
    const routable = this.routableLabelSets();
    for (const lane of this.queue.lanes()) if (!routable(lane.labels)) count += lane.size;
    for (const entry of this.delayed.values()) if (!routable(entry.requiredLabels)) count += 1;
    return count;
  }

  /** Whether some live session carries a label set, memoized per set for one question. */
  private routableLabelSets(): (labels: Labels) => boolean {
    const known = new Map<string, boolean>();
    return (labels) => {
      const key = labelSetKey(labels);
      let answer = known.get(key);
      if (answer === undefined) {
        answer = false;
        for (const [workerId, carried] of this.sessionLabels) {
          if (!this.sessions.get(workerId)?.leaving && labelsMatch(labels, carried)) {
            answer = true;
            break;
          }
        }
        known.set(key, answer);
      }
      return answer;
    };
  }

  /** The queued rollout `workerId` should get now, if any (it stays queued). */
  private pickFor(workerId: string, now: Millis): QueueEntry | undefined {
    if (this.queue.size === 0) return undefined;
    const record = this.store.getWorker(workerId);
    if (record !== undefined && isQuarantined(record.worker, now)) return undefined;
    const labels = this.sessionLabels.get(workerId) ?? record?.worker.labels ?? {};
    return this.queue.pick({
      workerId,
      labels,
      mayRetake: (entry) => now >= entry.avoidUntil || !this.anotherCouldTake(entry, workerId, now),
    });
  }

  /** Whether a connected worker other than `workerId`, new to the rollout and not quarantined, could take it. */
  private anotherCouldTake(entry: QueueEntry, workerId: string, now: Millis): boolean {
    for (const [other, link] of this.sessions) {
      if (other === workerId || link.leaving || entry.ranOn.has(other)) continue;
      if (!labelsMatch(entry.requiredLabels, this.sessionLabels.get(other) ?? {})) continue;
      const record = this.store.getWorker(other);
      if (record !== undefined && isQuarantined(record.worker, now)) continue;
      return true;
    }
    return false;
  }

  /** A rollout entered the queue: ready at once, or after its retry_delay. */
  private queueRollout(rollout: Rollout, now: Millis) {
    const ranOn = rollout.attemptCount > 0 ? this.workersThatRan(rollout) : NOBODY;
    const latest = rollout.latestAttemptId ? this.store.getAttempt(rollout.latestAttemptId) : undefined;
    const lastEnd = latest === undefined ? undefined : (msOf(latest.endTime) ?? now);
    const readyAt = dispatchableAt(rollout);
    const entry: QueueEntry = {
      rolloutId: rollout.rolloutId,
      priority: rollout.priority,
      requiredLabels: rollout.config?.requiredLabels ?? {},
      ranOn,
      avoidUntil: Math.max(readyAt ?? -Infinity, lastEnd ?? now) + this.retryElsewhereMs,
    };
    if (readyAt !== undefined && readyAt > now) {
      this.delayed.set(rollout.rolloutId, entry);
      this.timers.schedule("release", rollout.rolloutId, readyAt);
    } else {
      this.queue.add(entry);
    }
    if (ranOn.size > 0) this.timers.schedule("pump", rollout.rolloutId, entry.avoidUntil);
  }

  /**
   * The workers that ran an attempt of an unfinished rollout: kept in memory
   * from dispatch to the rollout's end, read from the store once after a restart.
   */
  private workersThatRan(rollout: Rollout): Set<string> {
    let ranOn = this.ranOn.get(rollout.rolloutId);
    if (ranOn !== undefined) return ranOn;
    ranOn = new Set();
    if (rollout.attemptCount > 0) {
      const everything = { orderBy: [{ field: "sequence_id", descending: false }], offset: 0, limit: Number.MAX_SAFE_INTEGER };
      const filter = { rolloutId: rollout.rolloutId, workerId: "", statuses: [] };
      for (const attempt of this.store.listAttempts({ filter, ...everything }).items) ranOn.add(attempt.workerId);
      this.ranOn.set(rollout.rolloutId, ranOn);
    }
    return ranOn;
  }

  private releaseDelayed(rolloutId: string) {
    const entry = this.delayed.get(rolloutId);
    if (entry === undefined) return;
    this.delayed.delete(rolloutId);
    this.queue.add(entry);
    // It joins the back of the queue now, in the store's order too.
    this.store.pushQueue(rolloutId);
  }

  private unqueue(rolloutId: string) {
    this.queue.remove(rolloutId);
    this.delayed.delete(rolloutId);
    this.timers.cancel("release", rolloutId);
    this.timers.cancel("pump", rolloutId);
  }

  /** A worker's attempt ended: its health record, and quarantine when it keeps failing. */
  private judgeWorker(attempt: Attempt, now: Millis) {
    const outcome = workerOutcome(attempt);
    if (outcome === "neutral") return;
    const workerId = attempt.workerId;
    if (outcome === "success" && !this.failureStreaks.has(workerId)) {
      // The common case, kept cheap: a healthy worker's success only matters if it ends a quarantine.
      const worker = this.store.getWorker(workerId)?.worker;
      if (worker === undefined || (worker.quarantineCount === 0 && worker.quarantineUntil === undefined)) return;
    }
    const streak = nextFailureStreak(this.failureStreaks.get(workerId) ?? [], outcome, now, this.quarantinePolicy);
    if (streak.length === 0) this.failureStreaks.delete(workerId);
    else this.failureStreaks.set(workerId, streak);
    const record = this.store.getWorker(workerId);
    if (record === undefined) return;
    if (successClearsQuarantine(record.worker, outcome, now)) {
      this.updateWorker(workerId, now, clearQuarantine);
      this.log(`worker ${workerId}: quarantine cleared by a success (attempt ${attempt.attemptId})`);
      return;
    }
    if (outcome !== "failure") return;
    const last = `attempt ${attempt.attemptId} ${AttemptStatus[attempt.status]}${attempt.error?.message ? `: ${attempt.error.message}` : ""}`;
    const decision = quarantineDecision(record.worker, streak, this.quarantinePolicy, now, last);
    if (decision === undefined) return;
    this.updateWorker(workerId, now, (r) => quarantineWorker(r, decision.until, decision.reason, decision.count));
    this.failureStreaks.delete(workerId);
    this.timers.schedule("quarantine", workerId, decision.until);
    this.log(
      `worker ${workerId} quarantined for ${Math.round((decision.until - now) / 1000)} s ` +
        `(until ${new Date(decision.until).toISOString()}): ${decision.reason}`,
    );
  }

  // ---- transitions -------------------------------------------------------

  /** Creates the next attempt of a queued rollout for `workerId`. */
  private dispatch(rolloutId: string, workerId: string, now: Millis, fx: Effects) {
    const rollout = this.getRollout(rolloutId);
    const attempt = newAttempt(rollout, newAttemptId(), workerId, now);
    this.store.putAttempt(attempt);
    // Only a rollout that may be retried needs to remember where it ran.
    if (maxAttempts(rollout) > attempt.sequenceId) {
      const ranOn = this.workersThatRan(rollout);
      ranOn.add(workerId);
      this.ranOn.set(rolloutId, ranOn);
    }
    const dispatched = dispatchRollout(rollout, attempt, now);
    this.saveRollout(rollout, dispatched, now, fx);
    this.updateWorker(workerId, now, (r) => holdAttempt(r, attempt, this.liveness, now));
    this.scheduleAttemptCheck(attempt, dispatched);
    return { rollout: dispatched, attempt };
  }

  /**
   * Hands queued rollouts to waiting sessions, one credit each, round-robin:
   * a session served goes behind those not served yet. A session that finds
   * nothing it may take keeps its place (nothing it could take appears while
   * pumping, so it is not asked twice).
   */
  private pump(now: Millis, fx: Effects) {
    if (this.draining || this.queue.size === 0 || this.waiting.length === 0) return;
    let stuck: SessionLink[] | undefined;
    let round = this.waiting;
    for (;;) {
      let served: SessionLink[] | undefined;
      let i = 0;
      for (; i < round.length && this.queue.size > 0; i++) {
        const link = round[i]!;
        if (!this.isLive(link) || link.leaving || link.credits <= 0) continue;
        const entry = this.pickFor(link.workerId, now);
        if (entry === undefined) {
          (stuck ??= []).push(link);
          continue;
        }
        const assignment = this.dispatch(entry.rolloutId, link.workerId, now, fx);
        link.credits -= 1;
        if (link.credits > 0) (served ??= []).push(link);
        const message = create(SessionResponseSchema, { message: { case: "assignment", value: assignment } });
        fx.add(() => link.send(message));
      }
      if (i < round.length || served === undefined || this.queue.size === 0) {
        const rest = round.slice(i);
        this.waiting = stuck === undefined && served === undefined ? rest : [...(stuck ?? []), ...rest, ...(served ?? [])];
        return;
      }
      round = served;
    }
  }

  private saveRollout(before: Rollout | undefined, after: Rollout, now: Millis, fx: Effects) {
    if (before === after) return;
    this.store.putRollout(after);
    this.options.observer?.rolloutChanged?.(before, after);
    this.scheduleRolloutClock(after);
    const effects = rolloutEffects(before, after);
    if (effects.enqueue) {
      this.store.pushQueue(after.rolloutId);
      this.queueRollout(after, now);
    }
    if (effects.dequeue) {
      this.store.removeFromQueue(after.rolloutId);
      this.unqueue(after.rolloutId);
    }
    if (effects.finished) {
      this.ranOn.delete(after.rolloutId);
      fx.add(() => this.wakeFinishWaiters(after.rolloutId));
    }
  }

  /** Stores an attempt change and carries its consequences to its worker and rollout. */
  private saveAttempt(before: Attempt, after: Attempt, now: Millis, fx: Effects) {
    if (before === after) return;
    this.store.putAttempt(after);
    this.options.observer?.attemptChanged?.(before, after);
    const wasActive = isAttemptActive(before.status);
    const isActive = isAttemptActive(after.status);
    if (wasActive && !isActive) {
      const lost = after.status === AttemptStatus.TIMEOUT || after.status === AttemptStatus.UNRESPONSIVE;
      this.updateWorker(after.workerId, now, (r) => releaseAttempt(r, after, lost, this.liveness, now));
      this.timers.cancel("attempt", after.attemptId);
      this.judgeWorker(after, now);
    } else if (!wasActive && isActive) {
      this.updateWorker(after.workerId, now, (r) => holdAttempt(r, after, this.liveness, now));
    }
    const rollout = this.store.getRollout(after.rolloutId);
    if (rollout !== undefined) {
      // While it stays active its due time only moves later, which the check finds out when it fires.
      if (isActive && !wasActive) this.scheduleAttemptCheck(after, rollout);
      this.saveRollout(rollout, followAttempt(rollout, after, now), now, fx);
    }
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
      // Transitions that leave the quarantine alone keep its Timestamp object, so this check costs one comparison.
      if (after.worker.quarantineUntil !== before.worker.quarantineUntil) this.trackQuarantine(after);
    }
    if (after.worker.version !== before.worker.version) {
      for (const listener of this.workerListeners) listener(after.worker);
    }
    if (after !== before) {
      const due = latenessDue(after, this.liveness);
      if (due !== undefined) this.timers.scheduleNoLaterThan("worker", workerId, due);
    }
    return after;
  }

  private log(line: string) {
    this.options.log?.(line);
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
    for (const check of this.drainWatchers) check();
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
    priority: existing.priority,
  });
  const normalized = create(EnqueueRolloutRequestSchema, {
    ...request,
    metadata: request.metadata ?? {},
    config: request.config ?? existing.config,
  });
  return equals(EnqueueRolloutRequestSchema, asRequest, normalized);
}
