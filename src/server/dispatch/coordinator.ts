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
import { Drain, type OpenSession } from "./sessions/drain.js";
import { RunnerSessions } from "./sessions/runner-sessions.js";
import { TimerChecks } from "./timers/timer-checks.js";
import { Recovery } from "./recovery/recovery.js";
import { ReplicaEvents } from "./recovery/replica-events.js";
import { cancelMessage, fenceOf } from "./sessions/messages.js";
import { MassDropBrake, sessionSpan } from "./timers/mass-drop-brake.js";
import type { SessionLink } from "./session-link.js";
import { type LiveSession, SessionRegistry } from "./sessions/registry.js";
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
  /** Shutdown: no more dispatching, every runner told. */
  private readonly shutdown: Drain;
  /** Runner sessions and their credits. */
  private readonly runnerSessions: RunnerSessions;

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
    this.shutdown = new Drain(this.sessions, this.turn);
    this.pump = new Pump({
      turn: this.turn,
      sessions: this.sessions,
      routing: this.routing,
      draining: () => this.shutdown.draining,
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
    this.runnerSessions = new RunnerSessions({
      turn: this.turn,
      judge: this.judge,
      pump: this.pump,
      sessions: this.sessions,
      routing: this.routing,
      brake: this.brake,
      drain: this.shutdown,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
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
    const entry = this.shutdown.draining ? undefined : this.routing.pickFor(workerId, labels, now);
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
        await this.runnerSessions.returnCredit(credited, now, fx);
        await this.pump.pump(now, fx);
        await this.turn.settle(fx);
      }
      throw error;
    }
    this.turn.absorb(changes, now, fx);
    await this.judge.judgeEnded(changes, now, fx);
    if (credited !== undefined) await this.runnerSessions.returnCredit(credited, now, fx);
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

  /** Hello: attaches the session and sorts the attempts its runner still runs (see RunnerSessions.openSession). */
  openSession(link: SessionLink, opening: SessionOpening, runningAttemptIds: readonly string[]): Promise<void> {
    return this.runnerSessions.openSession(link, opening, runningAttemptIds);
  }

  /** Ready: the runner can take `slots` more assignments now. */
  grantCredits(link: SessionLink, slots: number): Promise<void> {
    return this.runnerSessions.grantCredits(link, slots);
  }

  /** Goodbye: finish what it holds, take nothing new. */
  goodbye(link: SessionLink) {
    this.runnerSessions.goodbye(link);
  }

  /** The stream ended; a newer session of the same worker may already have taken over. */
  closeSession(link: SessionLink): Promise<void> {
    return this.runnerSessions.closeSession(link);
  }

  /** Each open session with the attempts its worker holds: what a drain waits for, and what an abort abandons. */
  openSessions(): OpenSession[] {
    return this.shutdown.openSessions();
  }








  // ---- shutdown ----------------------------------------------------------

  /** Stops dispatching, tells every runner, and waits for what they hold (see Drain.drain). */
  drain(reason: string, timeoutMs: number): Promise<{ held: OpenSession[] }> {
    return this.shutdown.drain(reason, timeoutMs);
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
