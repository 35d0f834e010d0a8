import type { Attempt } from "../../../gen/runnerline/v1/attempt_pb.js";
import { isRolloutQueued, maxAttempts } from "../../domain/rollout.js";
import type { Clock } from "../../domain/time.js";
import type { ReplicaBus, ReplicaEvent } from "../../replicas/bus.js";
import type { Store } from "../../store/store.js";
import type { Pump } from "../reactions/pump.js";
import type { Routing } from "../reactions/routing.js";
import { cancelMessage, operatorDrainMessage } from "../sessions/messages.js";
import type { SessionRegistry } from "../sessions/registry.js";
import type { Watchdog } from "../timers/watchdog.js";
import { Effects } from "../turn/effects.js";
import type { Turn } from "../turn/turn.js";

export interface ReplicaEventsOptions {
  turn: Turn;
  pump: Pump;
  sessions: SessionRegistry;
  routing: Routing;
  watchdog: Watchdog;
  bus: ReplicaBus;
  log: (line: string) => void;
}

/**
 * Other servers on the same store (src/server/replicas): what their events
 * mean here — rollouts they queued join this server's index and those they
 * dequeued leave it, rollouts they finished wake waiters here, attempts they ended are cancelled on sessions
 * held here, sessions they opened replace this server's — and the periodic
 * resync that stands in for lost events.
 */
export class ReplicaEvents {
  private readonly turn: Turn;
  private readonly store: Store;
  private readonly clock: Clock;
  private readonly pump: Pump;
  private readonly sessions: SessionRegistry;
  private readonly routing: Routing;
  private readonly watchdog: Watchdog;
  private readonly log: (line: string) => void;

  constructor(options: ReplicaEventsOptions) {
    this.turn = options.turn;
    this.store = options.turn.store;
    this.clock = options.turn.clock;
    this.pump = options.pump;
    this.sessions = options.sessions;
    this.routing = options.routing;
    this.watchdog = options.watchdog;
    this.log = options.log;
    options.bus.subscribe((event) => this.onReplicaEvent(event));
    options.bus.onResync(() => this.resync());
  }

  onReplicaEvent(event: ReplicaEvent) {
    const failed = (error: unknown) => this.log(`replica event ${event.kind}: ${error instanceof Error ? error.message : String(error)}`);
    switch (event.kind) {
      case "queued":
        this.learnQueued(event.ids).catch(failed);
        break;
      case "dequeued":
        // Taken (or cancelled) elsewhere: out of this server's index, so its claims go to rollouts still queued; and
        // while others claim, this server's picks look first within its share of the queue.
        for (const id of event.ids) this.routing.remove(id);
        this.routing.othersClaimed(this.clock.now());
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
            local.link.replaced({ sessionId: "", peer: "" });
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

  /**
   * Rollouts another server queued: into this server's index, then to its
   * waiting runners. Two reads whatever their number: the rollouts, then the
   * attempts of those that ran before (a retry keeps away from where it ran).
   */
  private async learnQueued(rolloutIds: readonly string[]) {
    const now = this.clock.now();
    const unknown = rolloutIds.filter((id) => !this.routing.has(id));
    const queued = (unknown.length === 0 ? [] : await this.store.getRollouts(unknown)).filter((r) => isRolloutQueued(r.status));
    const retried = queued.filter((r) => r.attemptCount > 0).map((r) => r.rolloutId);
    const attemptsOf = retried.length === 0 ? new Map<string, Attempt[]>() : await this.store.attemptsOfRollouts(retried);
    for (const rollout of queued) {
      if (this.routing.has(rollout.rolloutId)) continue;
      let latest: Attempt | undefined;
      if (rollout.attemptCount > 0) {
        const attempts = attemptsOf.get(rollout.rolloutId) ?? [];
        if (maxAttempts(rollout) > 1) this.routing.setRanOn(rollout.rolloutId, attempts.map((a) => a.workerId));
        latest = attempts.find((a) => a.attemptId === rollout.latestAttemptId);
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
  resync() {
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
        // Drained through another server: this one holds the session, so it tells the runner.
        if (record.worker.draining && !session.worker.draining) session.link.send(operatorDrainMessage(record.worker));
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

}
