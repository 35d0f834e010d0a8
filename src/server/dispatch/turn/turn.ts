import type { Attempt } from "../../../gen/runnerline/v1/attempt_pb.js";
import type { Rollout } from "../../../gen/runnerline/v1/rollout_pb.js";
import type { SessionResponse } from "../../../gen/runnerline/v1/runner_pb.js";
import type { Worker } from "../../../gen/runnerline/v1/worker_pb.js";
import { isAttemptActive } from "../../domain/attempt.js";
import { notFound } from "../../domain/errors.js";
import { isRolloutTerminal, maxAttempts, rolloutEffects } from "../../domain/rollout.js";
import type { Clock, Millis } from "../../domain/time.js";
import type { Liveness } from "../../domain/worker.js";
import type { ReplicaBus } from "../../replicas/bus.js";
import type { Store } from "../../store/store.js";
import { type Changes, NO_CHANGES } from "../../transitions/changes.js";
import type { TransitionContext } from "../../transitions/steps.js";
import type { FleetOutcomes } from "../reactions/fleet-outcomes.js";
import type { Routing } from "../reactions/routing.js";
import { operatorDrainMessage } from "../sessions/messages.js";
import type { SessionRegistry } from "../sessions/registry.js";
import type { TransitionObserver } from "../transition-observer.js";
import type { Watchdog } from "../timers/watchdog.js";
import type { Effects } from "./effects.js";

export interface TurnOptions {
  store: Store;
  clock: Clock;
  liveness: Liveness;
  sessions: SessionRegistry;
  watchdog: Watchdog;
  routing: Routing;
  /** The fleet's attempt outcomes (reactions/fleet-outcomes.ts): a finished rollout leaves them. */
  outcomes: FleetOutcomes;
  observer?: TransitionObserver;
  bus?: ReplicaBus;
}

/**
 * A turn: a request's store operations, what they changed, and what follows
 * once that is durable. Every part of dispatch runs its transitions here:
 * each is one atomic store operation whose rules are pure domain functions
 * (src/server/transitions); `absorb` follows the Changes it returns in this
 * server's memory (observers, timers, the queue index, sessions' view of their
 * workers) and collects the actions they call for in an Effects; `settle`
 * waits until the store has made them durable and runs those actions
 * (assignments, cancels, woken waiters, watchers, other servers told).
 */
export class Turn {
  readonly store: Store;
  readonly clock: Clock;
  readonly liveness: Liveness;
  private readonly sessions: SessionRegistry;
  private readonly watchdog: Watchdog;
  private readonly routing: Routing;
  private readonly outcomes: FleetOutcomes;
  private readonly observer: TransitionObserver | undefined;
  private readonly bus: ReplicaBus | undefined;
  private readonly finishWaiters = new Map<string, Set<(rolloutId: string) => void>>();
  private readonly workerListeners = new Set<(worker: Worker) => void>();
  /** Woken after each settled turn (the drain's check whether it is over). */
  readonly settleWatchers = new Set<() => void>();

  constructor(options: TurnOptions) {
    this.store = options.store;
    this.clock = options.clock;
    this.liveness = options.liveness;
    this.sessions = options.sessions;
    this.watchdog = options.watchdog;
    this.routing = options.routing;
    this.outcomes = options.outcomes;
    this.observer = options.observer;
    this.bus = options.bus;
  }

  context(now: Millis): TransitionContext {
    return { now, liveness: this.liveness };
  }

  // ---- reads -----------------------------------------------------------------

  async getRollout(rolloutId: string): Promise<Rollout> {
    const rollout = await this.store.getRollout(rolloutId);
    if (rollout === undefined) throw notFound(`rollout ${rolloutId} not found`);
    return rollout;
  }

  async getAttempt(attemptId: string): Promise<Attempt> {
    const attempt = await this.store.getAttempt(attemptId);
    if (attempt === undefined) throw notFound(`attempt ${attemptId} not found`);
    return attempt;
  }

  async getWorker(workerId: string): Promise<Worker> {
    const record = await this.store.getWorker(workerId);
    if (record === undefined) throw notFound(`worker ${workerId} not found`);
    return record.worker;
  }

  // ---- absorbing changes ----------------------------------------------------

  /**
   * Follows what a store operation wrote: observers, timers, the queue index,
   * sessions' view of their workers, waiters and watchers (the last two only
   * once it is durable, through `fx`).
   */
  absorb(changes: Changes, now: Millis, fx: Effects) {
    if (changes === NO_CHANGES) return;
    const observer = this.observer;
    for (const { before, after } of changes.attempts) {
      observer?.attemptChanged?.(before, after);
      const wasActive = before !== undefined && isAttemptActive(before.status);
      const isActive = isAttemptActive(after.status);
      if (wasActive && !isActive) this.watchdog.attemptEnded(after.attemptId);
      if (isActive && !wasActive) {
        if (before === undefined) this.outcomes.assigned(after.workerId, now);
        const rollout = changes.rollouts.find((c) => c.after.rolloutId === after.rolloutId)?.after;
        if (rollout !== undefined) {
          this.watchdog.attemptChecked(after, rollout);
          // Only a rollout that may be retried needs to remember where it ran.
          if (before === undefined && maxAttempts(rollout) > after.sequenceId) this.routing.ran(rollout.rolloutId, after.workerId);
        }
      }
    }
    for (const { before, after } of changes.rollouts) {
      observer?.rolloutChanged?.(before, after);
      this.watchdog.rolloutClock(after);
      const effects = rolloutEffects(before, after);
      if (effects.enqueue) {
        const latest = changes.attempts.find((c) => c.after.attemptId === after.latestAttemptId)?.after;
        this.routing.add(after, latest, now);
        // Told once durable, and only if this server's own waiting runners did not take it meanwhile: other servers
        // would read it only to find it claimed.
        const bus = this.bus;
        if (bus !== undefined) {
          fx.add(() => {
            if (this.routing.has(after.rolloutId)) bus.publish({ kind: "queued", ids: [after.rolloutId] });
          });
        }
      }
      if (effects.dequeue) {
        this.routing.remove(after.rolloutId);
        const bus = this.bus;
        if (bus !== undefined) fx.add(() => bus.publish({ kind: "dequeued", ids: [after.rolloutId] }));
      }
      if (effects.finished) {
        this.routing.finished(after.rolloutId);
        this.outcomes.finished(after.rolloutId);
        fx.add(() => {
          this.wakeFinishWaiters(after.rolloutId);
          this.bus?.publish({ kind: "finished", ids: [after.rolloutId] });
        });
      }
    }
    for (const { before, after } of changes.workers) {
      observer?.workerChanged?.(before, after);
      const workerId = after.worker.workerId;
      // Transitions that leave the quarantine alone keep its Timestamp object, so this check costs one comparison.
      if (
        before === undefined ||
        after.worker.quarantineUntil !== before.worker.quarantineUntil ||
        after.worker.cordoned !== before.worker.cordoned
      ) {
        this.routing.track(after);
      }
      if (after.worker.version !== (before?.worker.version ?? 1n)) {
        for (const listener of this.workerListeners) listener(after.worker);
        this.bus?.publish({ kind: "workers", ids: [workerId] });
      }
      this.watchdog.workerLateness(after);
      const session = this.sessions.get(workerId);
      if (session !== undefined && session.epoch === after.epoch) {
        session.worker = after.worker;
        if (after.worker.draining && before !== undefined && !before.worker.draining) {
          const drain = operatorDrainMessage(after.worker);
          fx.add(() => session.link.send(drain));
        }
      }
    }
  }

  /** Waits until the transitions are durable, then acts on them. */
  async settle(fx: Effects, then?: () => void) {
    await this.store.commit();
    then?.();
    fx.run();
    for (const check of this.settleWatchers) check();
  }

  // ---- handing out ------------------------------------------------------------

  /** Sends `message` to the worker's session on this server, once the turn is durable (none: nothing). */
  sendTo(workerId: string, message: SessionResponse, fx: Effects) {
    const session = this.sessions.get(workerId);
    if (session !== undefined) fx.add(() => session.link.send(message));
  }

  /** Resolves with the finished ones among `rolloutIds` once all have finished, the timeout passes or `signal` aborts. */
  async waitFor(rolloutIds: string[], timeoutMs: number | undefined, signal: AbortSignal): Promise<Rollout[]> {
    const current = await Promise.all(rolloutIds.map((id) => this.getRollout(id)));
    const pending = new Set(current.filter((r) => !isRolloutTerminal(r.status)).map((r) => r.rolloutId));
    if (pending.size === 0 || timeoutMs === 0 || signal.aborted) return current.filter((r) => isRolloutTerminal(r.status));
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        for (const id of rolloutIds) this.finishWaiters.get(id)?.delete(onFinished);
        resolve();
      };
      const onFinished = (rolloutId: string) => {
        pending.delete(rolloutId);
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
    const final = await Promise.all(rolloutIds.map((id) => this.store.getRollout(id)));
    return final.filter((r): r is Rollout => r !== undefined && isRolloutTerminal(r.status));
  }

  /** Wakes the waiters of a rollout that finished (here, or on another server). */
  wakeFinishWaiters(rolloutId: string) {
    const waiters = this.finishWaiters.get(rolloutId);
    if (waiters === undefined) return;
    this.finishWaiters.delete(rolloutId);
    for (const wake of waiters) wake(rolloutId);
  }

  /** Notifies `listener` of every status or assignment change of any worker; returns the unsubscribe. */
  watchWorkers(listener: (worker: Worker) => void): () => void {
    this.workerListeners.add(listener);
    return () => this.workerListeners.delete(listener);
  }

  /** Whether anyone watches workers (then changes other servers made are read to tell them). */
  get watchingWorkers(): boolean {
    return this.workerListeners.size > 0;
  }

  /** Tells every watcher of a worker change (one another server made). */
  tellWorkerWatchers(worker: Worker) {
    for (const listener of this.workerListeners) listener(worker);
  }
}
