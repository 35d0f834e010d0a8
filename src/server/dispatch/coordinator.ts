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

const EVERYTHING = { offset: 0, limit: Number.MAX_SAFE_INTEGER };

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
    this.timers = new TimerChecks({
      turn: this.turn,
      judge: this.judge,
      pump: this.pump,
      sessions: this.sessions,
      routing: this.routing,
      watchdog: this.watchdog,
      defaultUnresponsiveMs: options.defaultUnresponsiveMs,
      resync: options.bus === undefined ? undefined : () => this.resync(),
    });
    const bus = options.bus;
    if (bus !== undefined) {
      bus.subscribe((event) => this.onReplicaEvent(event));
      bus.onResync(() => this.resync());
    }
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

  /**
   * Called once at start: rebuilds what the coordinator keeps in memory from
   * the store (the dispatch queue in its stored order, and a timer for
   * everything time alone can change). On a store that outlived a previous
   * process, the sessions recorded there died with it (when their workers
   * were last heard from), so their workers are UNKNOWN until they
   * reconnect, and the attempts in flight then — only those — get one grace
   * period for their runners to reconnect and claim them
   * (Hello.running_attempt_ids) before silence counts against them. Each
   * worker is set to hold exactly its active attempts: a store may write
   * that list behind, and the attempts are the record that counts.
   */
  async recover() {
    const now = this.clock.now();
    await this.load(now);
    // Sharing the store: other servers' sessions are alive. Those of a server that died (this one's previous
    // process included) are found by the fleet's leader (adoptOrphanedSessions), not here.
    if (this.options.bus !== undefined) return;
    const fx = new Effects();
    const active = await this.store.activeAttempts();
    const heldBy = new Map<string, Attempt[]>();
    for (const attempt of active) {
      const held = heldBy.get(attempt.workerId);
      if (held === undefined) heldBy.set(attempt.workerId, [attempt]);
      else held.push(attempt);
    }
    const allStatuses = [WorkerStatus.IDLE, WorkerStatus.BUSY, WorkerStatus.UNKNOWN, WorkerStatus.OFFLINE];
    for (const record of await this.store.workersWithStatus(allStatuses)) {
      this.routing.track(record);
      const endedAt = Math.min(now, lastHeardMs(record.worker) ?? now);
      const recovered = await this.store.changeWorker(record.worker.workerId, undefined, (r) => {
        const holding = holdExactly(r ?? record, heldBy.get(record.worker.workerId) ?? [], this.liveness, now);
        return holding.attachment === "open" ? detachSession(holding, false, this.liveness, now, endedAt) : holding;
      });
      this.turn.absorb(recovered, now, fx);
    }
    this.watchdog.inherit(
      active.map((attempt) => attempt.attemptId),
      now + this.options.heartbeatGraceMs,
    );
    await this.turn.settle(fx);
  }

  private async load(now: Millis) {
    const unfinished = [RolloutStatus.QUEUING, RolloutStatus.REQUEUING, RolloutStatus.PREPARING, RolloutStatus.RUNNING];
    const byId = { orderBy: [{ field: "rollout_id", descending: false }], ...EVERYTHING };
    const open = await this.store.listRollouts({ filter: { statuses: unfinished, idContains: "" }, ...byId });
    for (const rollout of open.items) {
      this.watchdog.rolloutClock(rollout);
      if (rollout.attemptCount > 0 && maxAttempts(rollout) > 1) {
        const bySequence = { orderBy: [{ field: "sequence_id", descending: false }], ...EVERYTHING };
        const filter = { rolloutId: rollout.rolloutId, workerId: "", statuses: [] };
        const attempts = await this.store.listAttempts({ filter, ...bySequence });
        this.routing.setRanOn(rollout.rolloutId, attempts.items.map((attempt) => attempt.workerId));
      }
    }
    for (const rollout of await this.store.queuedRollouts()) {
      if (!isRolloutQueued(rollout.status)) continue;
      const latest = rollout.latestAttemptId ? await this.store.getAttempt(rollout.latestAttemptId) : undefined;
      this.routing.add(rollout, latest, now);
    }
    for (const attempt of await this.store.activeAttempts()) {
      const rollout = await this.store.getRollout(attempt.rolloutId);
      if (rollout !== undefined) this.watchdog.attemptChecked(attempt, rollout);
    }
    for (const record of await this.store.workersWithStatus([WorkerStatus.IDLE, WorkerStatus.BUSY])) {
      this.watchdog.workerLateness(record);
    }
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

  private onReplicaEvent(event: ReplicaEvent) {
    const failed = (error: unknown) => this.log(`replica event ${event.kind}: ${error instanceof Error ? error.message : String(error)}`);
    switch (event.kind) {
      case "queued":
        this.learnQueued(event.ids).catch(failed);
        break;
      case "finished":
        for (const id of event.ids) this.turn.wakeFinishWaiters(id);
        break;
      case "stop":
        this.stopHeldAttempts(event.ids).catch(failed);
        break;
      case "workers":
        this.followRemoteWorkerChanges(event.ids).catch(failed);
        break;
      case "session":
        for (const workerId of event.ids) {
          const local = this.sessions.get(workerId);
          if (local !== undefined && local.epoch < event.epoch) {
            // The store's row belongs to the newer session now: this stream just ends.
            this.sessions.detach(local.link);
            local.link.close("aborted", `replaced by a newer session of worker ${workerId} on another server`);
          }
        }
        this.learnRemoteSessions(event.ids).catch(failed);
        break;
    }
  }

  /** Sessions another server opened: their labels, for retry-elsewhere here. */
  private async learnRemoteSessions(workerIds: readonly string[]) {
    for (const workerId of workerIds) {
      const record = await this.store.getWorker(workerId);
      if (record?.attachment === "open" && this.sessions.get(workerId) === undefined) this.routing.addRemoteSession(workerId, record.worker.labels);
    }
  }

  /** Rollouts another server queued: into this server's index, then to its waiting runners. */
  private async learnQueued(rolloutIds: readonly string[]) {
    const now = this.clock.now();
    const unknown = rolloutIds.filter((id) => !this.routing.has(id));
    for (const rollout of unknown.length === 0 ? [] : await this.store.getRollouts(unknown)) {
      if (!isRolloutQueued(rollout.status) || this.routing.has(rollout.rolloutId)) continue;
      let latest: Attempt | undefined;
      if (rollout.attemptCount > 0) {
        const bySequence = { orderBy: [{ field: "sequence_id", descending: false }], ...EVERYTHING };
        const attempts = await this.store.listAttempts({ filter: { rolloutId: rollout.rolloutId, workerId: "", statuses: [] }, ...bySequence });
        if (maxAttempts(rollout) > 1) this.routing.setRanOn(rollout.rolloutId, attempts.items.map((a) => a.workerId));
        latest = attempts.items.find((a) => a.attemptId === rollout.latestAttemptId);
      }
      this.routing.add(rollout, latest, now);
      this.watchdog.rolloutClock(rollout);
    }
    // Also when nothing was new: a resync may have found that a session kept retries away is gone.
    const fx = new Effects();
    await this.pump.pump(now, fx);
    await this.turn.settle(fx);
  }

  /**
   * The whole queue, read again: what lost events would have said. Entries
   * this server indexed before the read that the store no longer queues were
   * dispatched (or cancelled) by another server: they leave the index.
   */
  private resync() {
    const indexed = this.routing.indexedIds();
    this.store
      .attachedWorkerLabels()
      .then((attached) => {
        // Every server's sessions, as the store has them: retries that kept away for a session gone may go back.
        for (const workerId of attached.keys()) if (this.sessions.get(workerId) !== undefined) attached.delete(workerId);
        this.routing.setRemoteSessions(attached);
        return this.store.queuedRolloutIds();
      })
      .then((queuedIds) => {
        const queued = new Set(queuedIds);
        for (const id of indexed) if (!queued.has(id)) this.routing.remove(id);
        return this.learnQueued(queuedIds);
      })
      .catch((error: unknown) => this.log(`resync: ${error instanceof Error ? error.message : String(error)}`));
  }

  /** Attempts another server ended: runners holding a session here are told to stop. */
  private async stopHeldAttempts(attemptIds: readonly string[]) {
    for (const attemptId of attemptIds) {
      const attempt = await this.store.getAttempt(attemptId);
      const session = attempt && this.sessions.get(attempt.workerId);
      if (attempt === undefined || session === undefined) continue;
      session.link.send(cancelMessage(attemptId, attempt.error?.message || "the attempt was ended by the server"));
      // The other server also let the worker go of it: this one's view of the worker follows.
      const record = await this.store.getWorker(attempt.workerId);
      if (record !== undefined && record.epoch === session.epoch) session.worker = record.worker;
    }
  }

  /**
   * Workers another server changed: watchers here are told, and a worker whose
   * session this server holds is seen as it is now (a quarantine lifted or set
   * elsewhere), which may let it take work.
   */
  private async followRemoteWorkerChanges(workerIds: readonly string[]) {
    const mine = workerIds.filter((id) => this.sessions.get(id) !== undefined);
    const wanted = this.turn.watchingWorkers ? workerIds : mine;
    if (wanted.length === 0) return;
    for (const workerId of wanted) {
      const record = await this.store.getWorker(workerId);
      if (record === undefined) continue;
      this.turn.tellWorkerWatchers(record.worker);
      const session = this.sessions.get(workerId);
      if (session !== undefined && session.epoch === record.epoch) {
        session.worker = record.worker;
        this.routing.track(record);
      }
    }
    if (mine.length > 0) {
      const now = this.clock.now();
      const fx = new Effects();
      await this.pump.pump(now, fx);
      await this.turn.settle(fx);
    }
  }

  /**
   * Sessions held by a server that died (the fleet's leader finds them): as for
   * a lost stream, the worker is UNKNOWN from when it was last heard from, and
   * its attempts are judged after their silence timeout unless its runner
   * reconnects somewhere and claims them.
   */
  async adoptOrphanedSessions(orphans: readonly { workerId: string; epoch: number }[]) {
    if (orphans.length === 0) return;
    const now = this.clock.now();
    const fx = new Effects();
    const adopted = new Set<string>();
    for (const { workerId, epoch } of orphans) {
      const detached = await this.store
        .changeWorker(workerId, { workerId, epoch }, (r) => {
          const record = r ?? newWorkerRecord(workerId, now);
          if (record.attachment !== "open") return record;
          return detachSession(record, false, this.liveness, now, Math.min(now, lastHeardMs(record.worker) ?? now));
        })
        .catch((error: unknown) => {
          // A newer session took the worker meanwhile: it is not orphaned.
          if (error instanceof DomainError && error.kind === "aborted") return NO_CHANGES;
          throw error;
        });
      if (detached !== NO_CHANGES) adopted.add(workerId);
      this.turn.absorb(detached, now, fx);
    }
    for (const attempt of await this.store.activeAttempts()) {
      if (!adopted.has(attempt.workerId)) continue;
      const rollout = await this.store.getRollout(attempt.rolloutId);
      if (rollout !== undefined) this.watchdog.attemptChecked(attempt, rollout);
    }
    this.log(`took over ${adopted.size} session(s) of dead servers: their workers are UNKNOWN until they reconnect`);
    await this.turn.settle(fx);
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
