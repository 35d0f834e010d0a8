import { create, equals } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { type Attempt, AttemptErrorKind, AttemptStatus } from "../../gen/runnerline/v1/attempt_pb.js";
import {
  type EnqueueRolloutRequest,
  EnqueueRolloutRequestSchema,
  type Rollout,
  RolloutStatus,
} from "../../gen/runnerline/v1/rollout_pb.js";
import { type SessionResponse, SessionResponseSchema } from "../../gen/runnerline/v1/runner_pb.js";
import { type Worker, WorkerStatus } from "../../gen/runnerline/v1/worker_pb.js";
import {
  type AttemptReport,
  applyReport,
  expireAttempt,
  isAttemptActive,
  isAttemptCurrent,
  isRepeatedOutcome,
  recordLateReport,
  recordLateSignOfLife,
  recordSignOfLife,
  watchdogVerdict,
} from "../domain/attempt.js";
import { DomainError, failedPrecondition, notFound } from "../domain/errors.js";
import { newAttemptId, newRolloutId } from "../domain/ids.js";
import { type Labels, labelsMatch } from "../domain/labels.js";
import {
  DEFAULT_QUARANTINE_POLICY,
  nextFailureStreak,
  type QuarantinePolicy,
  quarantineDecision,
  successClearsQuarantine,
  workerOutcome,
} from "../domain/quarantine.js";
import {
  cancelRollout,
  expireRollout,
  isRolloutQueued,
  isRolloutTerminal,
  maxAttempts,
  newRollout,
  rolloutEffects,
  rolloutExpiry,
} from "../domain/rollout.js";
import { type Clock, type Millis, msOf, toTimestamp } from "../domain/time.js";
import {
  attachSession,
  clearQuarantine,
  detachSession,
  type HeartbeatData,
  holdExactly,
  lastHeardMs,
  type Liveness,
  newWorkerRecord,
  quarantineWorker,
  recordHeartbeat,
  recordWorkRequest,
  type SessionOpening,
  settle,
  type WorkerRecord,
} from "../domain/worker.js";
import type { Store } from "../store/store.js";
import { type Changes, NO_CHANGES } from "../transitions/changes.js";
import type { AttemptStep, SessionFence, TransitionContext } from "../transitions/steps.js";
import type { QueueEntry } from "./reactions/dispatch-queue.js";
import { Routing } from "./reactions/routing.js";
import { Effects } from "./turn/effects.js";
import { Turn } from "./turn/turn.js";
import { Judge } from "./reactions/judge.js";
import { Pump } from "./reactions/pump.js";
import { TimerChecks } from "./timers/timer-checks.js";
import { Recovery } from "./recovery/recovery.js";
import { ReplicaEvents } from "./recovery/replica-events.js";
import { cancelMessage, fenceOf } from "./sessions/messages.js";
import { MassDropBrake, sessionSpan } from "./timers/mass-drop-brake.js";
import type { SessionLink } from "./session-link.js";
import { type LiveSession, SessionRegistry } from "./sessions.js";
import type { TransitionObserver } from "./transition-observer.js";
import type { ReplicaBus, ReplicaEvent } from "../replicas/bus.js";
import { Watchdog } from "./timers/watchdog.js";

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
  /**
   * Other servers sharing the store (src/server/replicas): this one tells them
   * what they must act on and acts on what they say. Absent for an embedded store.
   */
  bus?: ReplicaBus;
}

export const DEFAULT_RETRY_ELSEWHERE_MS = 30_000;

/**
 * Turns requests into store operations and their outcomes into actions. Each
 * transition is one atomic store operation (src/server/store/store.ts) whose
 * rules are pure domain functions; the coordinator absorbs the Changes it
 * returns — the dispatch queue index, timers, waiters, observers — and once
 * they are durable acts on them: assignments pushed to waiting runners,
 * cancellations, woken waiters. Services call it; it never knows about
 * transports. Sessions and credits live in SessionRegistry, time-driven
 * checks in Watchdog.
 */
export class Coordinator {
  private readonly store: Store;
  private readonly clock: Clock;
  private readonly liveness: Liveness;
  private readonly sessions = new SessionRegistry();
  private readonly watchdog: Watchdog;
  private readonly brake: MassDropBrake;
  /** Which queued rollout may go to which worker (the queue index); the store keeps the truth. */
  private readonly routing: Routing;
  /** Runs transitions on the store and hands out what they changed. */
  private readonly turn: Turn;
  /** Hands queued rollouts to waiting sessions. */
  private readonly pump: Pump;
  /** Judges ended attempts' workers (quarantine). */
  private readonly judge: Judge;
  /** What time alone changes. */
  private readonly timers: TimerChecks;
  /** What other servers on the same store tell this one (absent for an embedded store). */
  private readonly replicas: ReplicaEvents | undefined;
  /** Rebuilds memory from the store at start. */
  private readonly recovery: Recovery;
  /** Set when the server shuts down: no more dispatching. */
  private draining = false;
  private drainMessage: SessionResponse | undefined;

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
    this.watchdog = new Watchdog(this.liveness, options.defaultUnresponsiveMs, this.brake);
    this.routing = new Routing(this.sessions, this.watchdog, options.retryElsewhereMs ?? DEFAULT_RETRY_ELSEWHERE_MS, options.bus !== undefined);
    this.turn = new Turn({
      store: this.store,
      clock: this.clock,
      liveness: this.liveness,
      sessions: this.sessions,
      watchdog: this.watchdog,
      routing: this.routing,
      observer: options.observer,
      bus: options.bus,
    });
    this.pump = new Pump({
      turn: this.turn,
      sessions: this.sessions,
      routing: this.routing,
      draining: () => this.draining,
      shared: options.bus !== undefined,
    });
    this.judge = new Judge({
      turn: this.turn,
      pump: this.pump,
      sessions: this.sessions,
      routing: this.routing,
      watchdog: this.watchdog,
      quarantinePolicy: { ...DEFAULT_QUARANTINE_POLICY, ...options.quarantine },
      bus: options.bus,
      log: (line) => this.log(line),
    });
    this.replicas =
      options.bus === undefined
        ? undefined
        : new ReplicaEvents({
            turn: this.turn,
            pump: this.pump,
            sessions: this.sessions,
            routing: this.routing,
            watchdog: this.watchdog,
            bus: options.bus,
            log: (line) => this.log(line),
          });
    this.timers = new TimerChecks({
      turn: this.turn,
      judge: this.judge,
      pump: this.pump,
      sessions: this.sessions,
      routing: this.routing,
      watchdog: this.watchdog,
      defaultUnresponsiveMs: options.defaultUnresponsiveMs,
      resync: this.replicas === undefined ? undefined : () => this.replicas!.resync(),
    });
    this.recovery = new Recovery({
      turn: this.turn,
      routing: this.routing,
      watchdog: this.watchdog,
      heartbeatGraceMs: options.heartbeatGraceMs,
      shared: options.bus !== undefined,
      log: (line) => this.log(line),
    });
  }


  // ---- rollouts ----------------------------------------------------------

  /** Enqueues all or none; a repeated idempotency key returns the existing rollout. */
  async enqueue(requests: EnqueueRolloutRequest[], retried = false): Promise<Rollout[]> {
    const now = this.clock.now();
    const existing = await Promise.all(
      requests.map((request) => (request.rolloutId === "" ? undefined : this.store.getRollout(request.rolloutId))),
    );
    const claimed = new Set<string>();
    const rollouts = requests.map((request, i) => {
      const found = existing[i];
      if (found !== undefined) {
        if (!sameEnqueueRequest(found, request)) {
          throw new DomainError("already_exists", `rollout ${request.rolloutId} exists with different content`);
        }
        return { rollout: found, fresh: false };
      }
      if (request.rolloutId !== "" && claimed.has(request.rolloutId)) {
        throw new DomainError("already_exists", `rollout ${request.rolloutId} appears twice in the request`);
      }
      claimed.add(request.rolloutId);
      return { rollout: newRollout(request, request.rolloutId || newRolloutId(), now), fresh: true };
    });
    const fresh = rollouts.filter((r) => r.fresh).map((r) => r.rollout);
    let changes = NO_CHANGES;
    try {
      if (fresh.length > 0) changes = await this.store.enqueueRollouts(fresh);
    } catch (error) {
      // Another enqueue took one of the ids since they were read: read again, once (it may be the same rollout).
      if (error instanceof DomainError && error.kind === "already_exists" && !retried) return this.enqueue(requests, true);
      throw error;
    }
    const fx = new Effects();
    this.turn.absorb(changes, now, fx);
    await this.pump.pump(now, fx);
    await this.turn.settle(fx);
    return rollouts.map((r) => r.rollout);
  }

  getRollout(rolloutId: string): Promise<Rollout> {
    return this.turn.getRollout(rolloutId);
  }

  async cancel(rolloutId: string): Promise<Rollout> {
    const now = this.clock.now();
    const reason = "rollout cancelled";
    const changes = await this.store.changeRollout(rolloutId, (rollout) => ({
      after: cancelRollout(rollout, now),
      attemptErrorKind: AttemptErrorKind.CANCELLED,
      reason,
    }), this.turn.context(now));
    const fx = new Effects();
    this.turn.absorb(changes, now, fx);
    this.judge.cancelAbortedAttempts(changes, reason, fx);
    await this.judge.judgeEnded(changes, now, fx);
    await this.turn.settle(fx);
    return changes.rollouts.find((c) => c.after.rolloutId === rolloutId)?.after ?? (await this.getRollout(rolloutId));
  }

  /** Unary pull: takes the head of the queue for `workerId` (undefined when empty). */
  async dequeueFor(workerId: string): Promise<{ rollout: Rollout; attempt: Attempt } | undefined> {
    const now = this.clock.now();
    const fx = new Effects();
    const asked = await this.store.changeWorker(workerId, undefined, (r) =>
      recordWorkRequest(r ?? newWorkerRecord(workerId, now), this.liveness, now),
    );
    this.turn.absorb(asked, now, fx);
    const labels = this.sessions.get(workerId)?.labels ?? asked.workers[0]?.after.worker.labels ?? {};
    const entry = this.draining ? undefined : this.routing.pickFor(workerId, labels, now);
    let assigned: { rollout: Rollout; attempt: Attempt } | undefined;
    if (entry !== undefined) {
      this.routing.take(entry);
      const { claimed, changes } = await this.store.claimRollouts({
        now,
        liveness: this.liveness,
        workerId,
        epoch: undefined,
        rolloutIds: [entry.rolloutId],
        newAttemptId,
      });
      this.turn.absorb(changes, now, fx);
      assigned = claimed[0];
    }
    await this.turn.settle(fx);
    return assigned;
  }

  /** Resolves with the finished ones among `rolloutIds` once all have finished, the timeout passes or `signal` aborts. */
  waitFor(rolloutIds: string[], timeoutMs: number | undefined, signal: AbortSignal): Promise<Rollout[]> {
    return this.turn.waitFor(rolloutIds, timeoutMs, signal);
  }

  // ---- attempts ----------------------------------------------------------

  getAttempt(attemptId: string): Promise<Attempt> {
    return this.turn.getAttempt(attemptId);
  }

  /**
   * A runner's report. Only a current attempt moves its rollout; a report
   * about one that is no longer current is recorded on it and refused with
   * FAILED_PRECONDITION (after the record is durable). A report made on a
   * session that a newer one replaced changes nothing (ABORTED).
   * `returnsCredit`: the session gets one credit back with it, also when the
   * report is refused (a terminal update under Hello.terminal_update_returns_credit).
   */
  async report(
    attemptId: string,
    report: AttemptReport,
    guard: { workerId?: string; expectedVersion?: bigint; session?: SessionLink; returnsCredit?: boolean } = {},
  ): Promise<Attempt> {
    const now = this.clock.now();
    const credited = guard.returnsCredit === true ? guard.session : undefined;
    let outcome: Attempt | undefined;
    let refusal: DomainError | undefined;
    const step: AttemptStep = (attempt, rollout) => {
      if (guard.workerId !== undefined && attempt.workerId !== guard.workerId) {
        throw failedPrecondition(`attempt ${attemptId} belongs to worker ${attempt.workerId}, not ${guard.workerId}`);
      }
      if (guard.expectedVersion !== undefined && guard.expectedVersion !== attempt.version) {
        throw new DomainError(
          "aborted",
          `attempt ${attemptId} is at version ${attempt.version}, not the expected ${guard.expectedVersion}`,
        );
      }
      if (rollout !== undefined && isAttemptCurrent(attempt, rollout)) return (outcome = applyReport(attempt, report, now));
      if (isRepeatedOutcome(attempt, report)) return (outcome = attempt);
      refusal = failedPrecondition(
        `attempt ${attemptId} is no longer current (attempt ${AttemptStatus[attempt.status]}, rollout ${
          rollout === undefined ? "missing" : RolloutStatus[rollout.status]
        }); the report was recorded as late_status`,
      );
      return (outcome = recordLateReport(attempt, report, now));
    };
    const fx = new Effects();
    let changes: Changes;
    try {
      changes = await this.store.changeAttempt(attemptId, fenceOf(guard.session), step, this.turn.context(now));
    } catch (error) {
      if (credited !== undefined && error instanceof DomainError) {
        await this.returnCredit(credited, now, fx);
        await this.pump.pump(now, fx);
        await this.turn.settle(fx);
      }
      throw error;
    }
    this.turn.absorb(changes, now, fx);
    await this.judge.judgeEnded(changes, now, fx);
    if (credited !== undefined) await this.returnCredit(credited, now, fx);
    await this.pump.pump(now, fx);
    await this.turn.settle(fx);
    if (refusal !== undefined) throw refusal;
    return outcome!;
  }

  // ---- workers -----------------------------------------------------------

  getWorker(workerId: string): Promise<Worker> {
    return this.turn.getWorker(workerId);
  }

  /**
   * Telemetry, plus a sign of life for each listed attempt the worker still
   * holds. A listed attempt that is no longer current gets a Cancel back, so
   * the runner stops spending its machine on it.
   */
  async heartbeat(workerId: string, data: HeartbeatData, attemptIds: readonly string[] = []): Promise<Worker> {
    const now = this.clock.now();
    const fx = new Effects();
    const changes = await this.store.changeWorker(workerId, undefined, (r) =>
      recordHeartbeat(r ?? newWorkerRecord(workerId, now), data, this.liveness, now),
    );
    this.turn.absorb(changes, now, fx);
    const worker = changes.workers[0]?.after.worker ?? (await this.getWorker(workerId));
    this.options.onHeartbeat?.(workerId, data, now);
    for (const attemptId of attemptIds) {
      let stale = false;
      const signs = await this.store
        .changeAttempt(attemptId, undefined, (attempt, rollout) => {
          if (attempt.workerId !== workerId) return attempt;
          if (rollout !== undefined && isAttemptCurrent(attempt, rollout)) return recordSignOfLife(attempt, now);
          stale = true;
          return recordLateSignOfLife(attempt, now);
        }, this.turn.context(now))
        .catch((error: unknown) => {
          if (error instanceof DomainError && error.kind === "not_found") return NO_CHANGES;
          throw error;
        });
      this.turn.absorb(signs, now, fx);
      if (stale) this.turn.sendTo(workerId, cancelMessage(attemptId, "the attempt is no longer current on the server"), fx);
    }
    // No dispatch here: a sign of life can only take a rollout out of the queue (a revival), never put one in.
    await this.turn.settle(fx);
    return worker;
  }

  /** Notifies `listener` of every status or assignment change of any worker; returns the unsubscribe. */
  watchWorkers(listener: (worker: Worker) => void): () => void {
    return this.turn.watchWorkers(listener);
  }

  // ---- runner sessions ---------------------------------------------------

  /**
   * Hello: attaches the session (replacing an older one of the same worker,
   * whose epoch it moves on), welcomes it, and sorts the attempts it says it
   * still runs into resumed ones and ones it must cancel. Attempts the server
   * thinks it holds but it does not list were lost with its previous
   * process: UNRESPONSIVE.
   */
  async openSession(link: SessionLink, opening: SessionOpening, runningAttemptIds: readonly string[]) {
    const now = this.clock.now();
    const fx = new Effects();
    const attached = await this.store.changeWorker(link.workerId, undefined, (r) =>
      attachSession(r ?? newWorkerRecord(link.workerId, now), opening, this.liveness, now),
    );
    const record = attached.workers[0]!.after;
    link.epoch = record.epoch;
    // A quarantine set elsewhere (another server, or before a restart) holds here too.
    this.routing.track(record);
    const previous = this.sessions.attach({ link, labels: opening.labels, epoch: record.epoch, worker: record.worker });
    previous?.link.close("aborted", `replaced by a newer session (${link.sessionId}) for worker ${link.workerId}`);
    this.options.bus?.publish({ kind: "session", ids: [link.workerId], epoch: record.epoch });
    this.turn.absorb(attached, now, fx);
    const fence = fenceOf(link);
    const listed = new Set(runningAttemptIds);
    for (const attemptId of record.worker.currentAttemptIds) {
      if (listed.has(attemptId)) continue;
      const lost = await this.store.changeAttempt(attemptId, fence, (attempt) =>
        isAttemptActive(attempt.status)
          ? expireAttempt(attempt, AttemptStatus.UNRESPONSIVE, "the runner reconnected without it", now)
          : attempt,
        this.turn.context(now),
      );
      this.turn.absorb(lost, now, fx);
      await this.judge.judgeEnded(lost, now, fx);
    }
    const resumed: string[] = [];
    const cancels: SessionResponse[] = [];
    for (const attemptId of listed) {
      let current = false;
      const signs = await this.store
        .changeAttempt(attemptId, fence, (attempt, rollout) => {
          current = attempt.workerId === link.workerId && rollout !== undefined && isAttemptCurrent(attempt, rollout);
          return current ? recordSignOfLife(attempt, now) : attempt;
        }, this.turn.context(now))
        .catch((error: unknown) => {
          if (error instanceof DomainError && error.kind === "not_found") return NO_CHANGES;
          throw error;
        });
      this.turn.absorb(signs, now, fx);
      if (current) resumed.push(attemptId);
      else cancels.push(cancelMessage(attemptId, "the server no longer counts this attempt as yours"));
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
    await this.pump.pump(now, fx);
    await this.turn.settle(fx, () => {
      link.send(welcome);
      for (const cancel of cancels) link.send(cancel);
      // A runner that reconnects during a drain hears it at once: it may report what it holds, and take nothing new.
      if (this.drainMessage !== undefined) link.send(this.drainMessage);
    });
  }

  /** Ready: the runner can take `slots` more assignments now. */
  async grantCredits(link: SessionLink, slots: number) {
    if (!this.sessions.isLive(link) || link.leaving) return;
    const now = this.clock.now();
    const fx = new Effects();
    await this.askForWork(link, slots, now, fx);
    await this.pump.pump(now, fx);
    await this.turn.settle(fx);
  }

  /** A credit returned with a report counts as Ready 1: the runner asks for work. */
  private async returnCredit(link: SessionLink, now: Millis, fx: Effects) {
    if (this.sessions.isLive(link) && !link.leaving) await this.askForWork(link, 1, now, fx);
  }

  private async askForWork(link: SessionLink, slots: number, now: Millis, fx: Effects) {
    this.sessions.grant(link, slots);
    const asked = await this.store.changeWorker(link.workerId, fenceOf(link), (r) =>
      recordWorkRequest(r ?? newWorkerRecord(link.workerId, now), this.liveness, now),
    );
    this.turn.absorb(asked, now, fx);
  }

  /** Goodbye: finish what it holds, take nothing new. */
  goodbye(link: SessionLink) {
    link.leaving = true;
    link.credits = 0;
  }

  /** The stream ended; a newer session of the same worker may already have taken over. */
  async closeSession(link: SessionLink) {
    const session = this.sessions.liveOf(link);
    if (session === undefined) return;
    this.sessions.detach(link);
    const now = this.clock.now();
    if (!link.leaving && !this.draining) {
      const spans = () => Array.from(this.sessions.values(), (s) => sessionSpan(s.worker));
      const engaged = this.brake.recordDrop(now, sessionSpan(session.worker), spans);
      if (engaged !== undefined) this.log(engaged);
    }
    const fx = new Effects();
    const detached = await this.store.changeWorker(link.workerId, fenceOf(link), (r) =>
      detachSession(r ?? newWorkerRecord(link.workerId, now), link.leaving, this.liveness, now),
    );
    this.turn.absorb(detached, now, fx);
    // Retries that kept away from the other waiting runners for this one's sake may now go back.
    await this.pump.pump(now, fx);
    await this.turn.settle(fx);
  }

  /** Each open session with the attempts its worker holds: what a drain waits for, and what an abort abandons. */
  openSessions(): { sessionId: string; workerId: string; attemptIds: string[] }[] {
    return Array.from(this.sessions.values(), (session) => ({
      sessionId: session.link.sessionId,
      workerId: session.link.workerId,
      attemptIds: session.worker.currentAttemptIds,
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
    await this.store.commit();
    return { held: holding() };
  }



  // ---- start -------------------------------------------------------------

  /** Called once at start: rebuilds what dispatch keeps in memory from the store (see Recovery.recover). */
  recover(): Promise<void> {
    return this.recovery.recover();
  }

  // ---- timers -----------------------------------------------------------

  /** Arms the timers on the real event loop (servers; tests with a manual clock call runWatchdog instead). */
  startTimers(onError: (error: unknown) => void) {
    return this.timers.start(onError);
  }

  /** Runs every check that is due (see TimerChecks.runWatchdog); tests call it after advancing a manual clock. */
  runWatchdog(): Promise<void> {
    return this.timers.runWatchdog();
  }





  // ---- quarantine and routing ---------------------------------------------

  /** Lifts a worker's quarantine (and probation) at once; it may take work again. */
  releaseWorker(workerId: string): Promise<Worker> {
    return this.judge.releaseWorker(workerId);
  }

  /** Workers quarantined now (for the fleet summary and /metrics). */
  quarantinedCount(): number {
    return this.pump.quarantinedCount();
  }

  /**
   * Queued rollouts that no connected worker can take: none carries their
   * required labels. Servers sharing a store judge against every server's
   * sessions, read from the store.
   */
  unroutableRolloutIds(): Promise<string[]> {
    return this.pump.unroutableRolloutIds();
  }

  /** How many queued rollouts no connected worker can take (see unroutableRolloutIds). */
  unroutableCount(): number {
    return this.pump.unroutableCount();
  }


  // ---- other servers on the same store -------------------------------------

  /** Sessions held by a server that died (the fleet's leader finds them): see Recovery.adoptOrphanedSessions. */
  adoptOrphanedSessions(orphans: readonly { workerId: string; epoch: number }[]): Promise<void> {
    return this.recovery.adoptOrphanedSessions(orphans);
  }








  private log(line: string) {
    this.options.log?.(line);
  }
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
