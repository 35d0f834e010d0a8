import type { Attempt } from "../../gen/runnerline/v1/attempt_pb.js";
import type { EnqueueRolloutRequest, Rollout } from "../../gen/runnerline/v1/rollout_pb.js";
import type { Worker } from "../../gen/runnerline/v1/worker_pb.js";
import type { AttemptReport } from "../domain/attempt.js";
import type { CordonRequest } from "../domain/cordon.js";
import { DEFAULT_QUARANTINE_POLICY, type QuarantinePolicy } from "../domain/quarantine.js";
import type { Clock, Millis } from "../domain/time.js";
import type { HeartbeatData, Liveness, SessionOpening } from "../domain/worker.js";
import type { ReplicaBus } from "../replicas/bus.js";
import type { Store } from "../store/store.js";
import { Judge } from "./reactions/judge.js";
import { FleetOutcomes } from "./reactions/fleet-outcomes.js";
import { Pump } from "./reactions/pump.js";
import { Routing } from "./reactions/routing.js";
import { Recovery } from "./recovery/recovery.js";
import { ReplicaEvents } from "./recovery/replica-events.js";
import type { SessionLink } from "./session-link.js";
import { Drain, type OpenSession } from "./sessions/drain.js";
import { SessionRegistry } from "./sessions/registry.js";
import { RunnerSessions } from "./sessions/runner-sessions.js";
import { MassDropBrake } from "./timers/mass-drop-brake.js";
import { TimerChecks } from "./timers/timer-checks.js";
import { Watchdog } from "./timers/watchdog.js";
import type { TransitionObserver } from "./transition-observer.js";
import { Cordons } from "./turn/cordons.js";
import { Requests } from "./turn/requests.js";
import { Turn } from "./turn/turn.js";

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
 * The one entry point of dispatch for the services (src/server/services) and
 * the server (app.ts): it builds the parts and hands each call to the part
 * that owns it, nothing more. Data flows one way — a request enters a part
 * (turn/requests.ts, sessions/, timers/, recovery/), which runs it as a turn
 * (turn/turn.ts: store operations, their Changes absorbed, reactions from
 * reactions/, then settled once durable), and the effects go back out
 * through the sessions' links, waiters and the replica bus. It never knows
 * about transports. See "Dispatch in parts" in docs/design-decisions.md.
 */
export class Coordinator {
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
  /** Requests that change rollouts, attempts and workers. */
  private readonly requests: Requests;
  /** An operator's cordon and drain of a worker. */
  private readonly cordons: Cordons;

  constructor(private readonly options: CoordinatorOptions) {
    const liveness: Liveness = { heartbeatGraceMs: options.heartbeatGraceMs };
    this.brake = new MassDropBrake({
      windowMs: options.heartbeatGraceMs,
      minFleet: options.brakeMinFleet ?? 10,
      holdMs: options.brakeHoldMs ?? 4 * options.heartbeatGraceMs,
      establishedAfterMs: options.heartbeatIntervalMs,
    });
    this.watchdog = new Watchdog(liveness, options.defaultUnresponsiveMs, this.brake);
    const quarantinePolicy = { ...DEFAULT_QUARANTINE_POLICY, ...options.quarantine };
    const outcomes = new FleetOutcomes(quarantinePolicy.windowMs);
    this.routing = new Routing(
      this.sessions,
      this.watchdog,
      options.retryElsewhereMs ?? DEFAULT_RETRY_ELSEWHERE_MS,
      options.heartbeatIntervalMs,
      options.bus !== undefined,
    );
    this.turn = new Turn({
      store: options.store,
      clock: options.clock,
      liveness,
      sessions: this.sessions,
      watchdog: this.watchdog,
      routing: this.routing,
      outcomes,
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
      quarantinePolicy,
      outcomes,
      observer: options.observer,
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
    this.requests = new Requests({
      turn: this.turn,
      judge: this.judge,
      pump: this.pump,
      sessions: this.sessions,
      runnerSessions: this.runnerSessions,
      routing: this.routing,
      drain: this.shutdown,
      onHeartbeat: options.onHeartbeat,
    });
    this.cordons = new Cordons(this.turn, this.pump, (line) => this.log(line));
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
      log: (line) => this.log(line),
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
  enqueue(requests: EnqueueRolloutRequest[]): Promise<Rollout[]> {
    return this.requests.enqueue(requests);
  }

  /** Cancels a rollout; runners holding its attempt are told to stop. */
  cancel(rolloutId: string): Promise<Rollout> {
    return this.requests.cancel(rolloutId);
  }

  /** Unary pull: takes the head of the queue for `workerId` (undefined when empty). */
  dequeueFor(workerId: string): Promise<{ rollout: Rollout; attempt: Attempt } | undefined> {
    return this.requests.dequeueFor(workerId);
  }

  /** The rollout (NOT_FOUND when unknown). */
  getRollout(rolloutId: string): Promise<Rollout> {
    return this.turn.getRollout(rolloutId);
  }

  /** Resolves with the finished ones among `rolloutIds` once all have finished, the timeout passes or `signal` aborts. */
  waitFor(rolloutIds: string[], timeoutMs: number | undefined, signal: AbortSignal): Promise<Rollout[]> {
    return this.turn.waitFor(rolloutIds, timeoutMs, signal);
  }

  // ---- attempts ----------------------------------------------------------

  /** A runner's report (see Requests.report for what is refused and how). */
  report(
    attemptId: string,
    report: AttemptReport,
    guard: { workerId?: string; expectedVersion?: bigint; session?: SessionLink; returnsCredit?: boolean } = {},
  ): Promise<Attempt> {
    return this.requests.report(attemptId, report, guard);
  }

  /** The attempt (NOT_FOUND when unknown). */
  getAttempt(attemptId: string): Promise<Attempt> {
    return this.turn.getAttempt(attemptId);
  }

  // ---- workers -----------------------------------------------------------

  /** Telemetry, plus a sign of life for each listed attempt the worker still holds (see Requests.heartbeat). */
  heartbeat(workerId: string, data: HeartbeatData, attemptIds: readonly string[] = []): Promise<Worker> {
    return this.requests.heartbeat(workerId, data, attemptIds);
  }

  /** The worker (NOT_FOUND when unknown). */
  getWorker(workerId: string): Promise<Worker> {
    return this.turn.getWorker(workerId);
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

  /** Forgets long-silent UNKNOWN workers with no attempts (see TimerChecks.forgetSilentWorkers); returns how many. */
  forgetSilentWorkers(forgetAfterMs: Millis): Promise<number> {
    return this.timers.forgetSilentWorkers(forgetAfterMs);
  }

  // ---- quarantine and routing ---------------------------------------------

  /** Lifts a worker's quarantine (and probation) at once; it may take work again. */
  releaseWorker(workerId: string): Promise<Worker> {
    return this.judge.releaseWorker(workerId);
  }

  // ---- an operator's cordon (domain/cordon.ts) --------------------------------

  /** CordonWorker: no new work until UncordonWorker; the attempts it holds go on. */
  cordonWorker(workerId: string, request: CordonRequest): Promise<Worker> {
    return this.cordons.cordonWorker(workerId, request);
  }

  /** UncordonWorker: it may take work again (at once, if it is waiting). */
  uncordonWorker(workerId: string): Promise<Worker> {
    return this.cordons.uncordonWorker(workerId);
  }

  /** DrainWorker: cordoned, and its runner is told to finish what it holds and exit. */
  drainWorker(workerId: string, request: CordonRequest): Promise<Worker> {
    return this.cordons.drainWorker(workerId, request);
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

  /**
   * This server's rank among the `count` live servers sharing the store: its
   * picks prefer rollouts in its share of the queue (QueueShare), so that the
   * servers do not all claim the same oldest rollouts at once.
   */
  shareQueue(index: number, count: number) {
    this.routing.setShare({ index, count });
  }

  /** Runner sessions this server holds now. */
  sessionCount(): number {
    return this.sessions.size;
  }

  /** Sessions held by a server that died (the fleet's leader finds them): see Recovery.adoptOrphanedSessions. */
  adoptOrphanedSessions(orphans: readonly { workerId: string; epoch: number }[]): Promise<void> {
    return this.recovery.adoptOrphanedSessions(orphans);
  }

  private log(line: string) {
    this.options.log?.(line);
  }
}
