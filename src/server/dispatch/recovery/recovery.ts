import type { Attempt } from "../../../gen/runnerline/v1/attempt_pb.js";
import { RolloutStatus } from "../../../gen/runnerline/v1/rollout_pb.js";
import { WorkerStatus } from "../../../gen/runnerline/v1/worker_pb.js";
import { isRolloutQueued, maxAttempts } from "../../domain/rollout.js";
import { DomainError } from "../../domain/errors.js";
import type { Clock, Millis } from "../../domain/time.js";
import { detachSession, holdExactly, lastHeardMs, type Liveness, newWorkerRecord } from "../../domain/worker.js";
import type { Store } from "../../store/store.js";
import { NO_CHANGES } from "../../transitions/changes.js";
import type { Routing } from "../reactions/routing.js";
import type { Watchdog } from "../timers/watchdog.js";
import { Effects } from "../turn/effects.js";
import type { Turn } from "../turn/turn.js";

/** A page that holds every row (the reads at start and on resync). */
export const EVERYTHING = { offset: 0, limit: Number.MAX_SAFE_INTEGER };

export interface RecoveryOptions {
  turn: Turn;
  routing: Routing;
  watchdog: Watchdog;
  heartbeatGraceMs: number;
  /** Whether other servers share the store (then their sessions are alive, and the leader adopts dead ones). */
  shared: boolean;
  log: (line: string) => void;
}

/**
 * Sessions and memory lost with a process: at start, what dispatch keeps in
 * memory (the queue index, where retries ran, every timer) is rebuilt from
 * the store and, on a store that outlived a previous process, that
 * process's sessions are ended; with other servers, the sessions of a dead
 * server are adopted (the fleet's leader finds them).
 */
export class Recovery {
  private readonly turn: Turn;
  private readonly store: Store;
  private readonly clock: Clock;
  private readonly liveness: Liveness;
  private readonly routing: Routing;
  private readonly watchdog: Watchdog;
  private readonly heartbeatGraceMs: number;
  private readonly shared: boolean;
  private readonly log: (line: string) => void;

  constructor(options: RecoveryOptions) {
    this.turn = options.turn;
    this.store = options.turn.store;
    this.clock = options.turn.clock;
    this.liveness = options.turn.liveness;
    this.routing = options.routing;
    this.watchdog = options.watchdog;
    this.heartbeatGraceMs = options.heartbeatGraceMs;
    this.shared = options.shared;
    this.log = options.log;
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
    if (this.shared) return;
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
      now + this.heartbeatGraceMs,
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
}
