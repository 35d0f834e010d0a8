import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { type Attempt, AttemptErrorKind, AttemptStatus } from "../../gen/runnerline/v1/attempt_pb.js";
import { type Rollout, RolloutStatus } from "../../gen/runnerline/v1/rollout_pb.js";
import { type FleetSummary, FleetSummarySchema, WorkerStatus } from "../../gen/runnerline/v1/worker_pb.js";
import type { TransitionObserver } from "../dispatch/transition-observer.js";
import { isAttemptActive } from "../domain/attempt.js";
import { isRolloutQueued } from "../domain/rollout.js";
import { type Clock, msOf, toTimestamp } from "../domain/time.js";
import type { WorkerRecord } from "../domain/worker.js";
import type { Store } from "../store/store.js";

/**
 * What dispatch knows about routing that counters cannot see: workers in
 * quarantine, and queued rollouts no connected worker's labels satisfy.
 * The dispatcher provides it; until it does, both are 0.
 */
export interface RoutingView {
  quarantinedWorkers(): number;
  unroutableQueued(): number;
}

export const NO_ROUTING: RoutingView = { quarantinedWorkers: () => 0, unroutableQueued: () => 0 };

/** How the watchdog ended something; the label of runnerline_watchdog_verdicts_total. */
export type VerdictKind = "timeout" | "unresponsive" | "deadline" | "queue_timeout";

/** Called for the events histograms record (attempt durations, dispatch latency). */
export interface FleetEvents {
  attemptEnded?(status: AttemptStatus, seconds: number): void;
  rolloutDispatched?(waitedSeconds: number): void;
}

/**
 * Counts of the fleet kept up to date from transitions (see
 * TransitionObserver), so that GetFleetSummary and /metrics read numbers
 * instead of scanning the store. Seeded once from the store at start.
 */
export class FleetCounters implements TransitionObserver {
  private readonly workersByStatus = new Map<WorkerStatus, number>();
  private workerTotal = 0;
  private connected = 0;
  private cordoned = 0;
  private totalCapacity = 0;
  private usedCapacity = 0;
  private readonly rolloutsByStatus = new Map<RolloutStatus, number>();
  private rolloutTotal = 0;
  /** Queued rollouts and when they joined the queue, oldest first (Map keeps insertion order). */
  private readonly queuedSince = new Map<string, number>();
  /** Since start: attempts that left PREPARING/RUNNING, by their final status. */
  readonly attemptsEnded = new Map<AttemptStatus, number>();
  readonly verdicts = new Map<VerdictKind, number>();
  heartbeats = 0;
  /** Quarantines held back because the share of the fleet that may be quarantined was reached. */
  quarantinesHeldBack = 0;

  constructor(
    private readonly clock: Clock,
    private readonly routing: RoutingView = NO_ROUTING,
    private readonly events: FleetEvents = {},
  ) {}

  /** Counts what the store holds at start (before recovery changes anything). */
  async seed(store: Store) {
    const allWorkers = [WorkerStatus.IDLE, WorkerStatus.BUSY, WorkerStatus.UNKNOWN, WorkerStatus.OFFLINE];
    for (const record of await store.workersWithStatus(allWorkers)) this.countWorker(record, 1);
    const statuses = Object.values(RolloutStatus).filter((s): s is RolloutStatus => typeof s === "number" && s !== 0);
    for (const status of statuses) {
      const query = { filter: { statuses: [status], idContains: "" }, orderBy: [{ field: "rollout_id", descending: false }], offset: 0, limit: 0 };
      const total = (await store.listRollouts(query)).total;
      this.rolloutsByStatus.set(status, total);
      this.rolloutTotal += total;
    }
    const queued = (await store.listRollouts({
      filter: { statuses: [RolloutStatus.QUEUING, RolloutStatus.REQUEUING], idContains: "" },
      orderBy: [{ field: "create_time", descending: false }, { field: "rollout_id", descending: false }],
      offset: 0,
      limit: Number.MAX_SAFE_INTEGER,
    })).items;
    const since: { id: string; at: number }[] = [];
    for (const rollout of queued) {
      // A retry waits since its last attempt ended.
      const latest = rollout.latestAttemptId ? await store.getAttempt(rollout.latestAttemptId) : undefined;
      since.push({ id: rollout.rolloutId, at: msOf(latest?.endTime) ?? msOf(rollout.createTime) ?? this.clock.now() });
    }
    since.sort((a, b) => a.at - b.at);
    for (const { id, at } of since) this.queuedSince.set(id, at);
  }

  workerChanged(before: WorkerRecord | undefined, after: WorkerRecord) {
    if (before !== undefined) {
      // A heartbeat stamps a new last_heartbeat_time; nothing else does.
      if (before.worker.lastHeartbeatTime !== after.worker.lastHeartbeatTime) this.heartbeats += 1;
      if (sameCounts(before, after)) return;
      this.countWorker(before, -1);
    }
    this.countWorker(after, 1);
  }

  workerRemoved(record: WorkerRecord) {
    this.countWorker(record, -1);
  }

  quarantineHeldBack() {
    this.quarantinesHeldBack += 1;
  }

  rolloutChanged(before: Rollout | undefined, after: Rollout) {
    const now = this.clock.now();
    if (before?.status !== after.status) {
      if (before !== undefined) this.countRollout(before.status, -1);
      this.countRollout(after.status, 1);
    }
    const wasQueued = before !== undefined && isRolloutQueued(before.status);
    const isQueued = isRolloutQueued(after.status);
    if (isQueued && !wasQueued) {
      this.queuedSince.delete(after.rolloutId);
      this.queuedSince.set(after.rolloutId, now);
    } else if (wasQueued && !isQueued) {
      const since = this.queuedSince.get(after.rolloutId);
      this.queuedSince.delete(after.rolloutId);
      if (after.status === RolloutStatus.PREPARING && since !== undefined) {
        this.events.rolloutDispatched?.(Math.max(0, now - since) / 1000);
      } else if (after.status === RolloutStatus.FAILED) {
        this.countVerdict(after.failureReason.startsWith("not dispatched") ? "queue_timeout" : "deadline");
      }
    }
  }

  rolloutRemoved(rollout: Rollout) {
    this.countRollout(rollout.status, -1);
    this.queuedSince.delete(rollout.rolloutId);
  }

  attemptChanged(before: Attempt | undefined, after: Attempt) {
    if (before === undefined || !isAttemptActive(before.status) || isAttemptActive(after.status)) return;
    this.attemptsEnded.set(after.status, (this.attemptsEnded.get(after.status) ?? 0) + 1);
    if (after.status === AttemptStatus.TIMEOUT) this.countVerdict("timeout");
    else if (after.status === AttemptStatus.UNRESPONSIVE) this.countVerdict("unresponsive");
    else if (after.error?.kind === AttemptErrorKind.DEADLINE_EXCEEDED) this.countVerdict("deadline");
    const start = msOf(after.startTime) ?? msOf(after.createTime);
    const end = msOf(after.endTime) ?? this.clock.now();
    if (start !== undefined) this.events.attemptEnded?.(after.status, Math.max(0, end - start) / 1000);
  }

  /** Workers currently in `status`. */
  workers(status: WorkerStatus): number {
    return this.workersByStatus.get(status) ?? 0;
  }

  rollouts(status: RolloutStatus): number {
    return this.rolloutsByStatus.get(status) ?? 0;
  }

  summary(): FleetSummary {
    const now = this.clock.now();
    const oldest = this.queuedSince.values().next();
    return create(FleetSummarySchema, {
      workers: {
        total: this.workerTotal,
        idle: this.workers(WorkerStatus.IDLE),
        busy: this.workers(WorkerStatus.BUSY),
        unknown: this.workers(WorkerStatus.UNKNOWN),
        offline: this.workers(WorkerStatus.OFFLINE),
        connected: this.connected,
        quarantined: this.routing.quarantinedWorkers(),
        cordoned: this.cordoned,
      },
      rollouts: {
        total: this.rolloutTotal,
        queuing: this.rollouts(RolloutStatus.QUEUING),
        preparing: this.rollouts(RolloutStatus.PREPARING),
        running: this.rollouts(RolloutStatus.RUNNING),
        requeuing: this.rollouts(RolloutStatus.REQUEUING),
        succeeded: this.rollouts(RolloutStatus.SUCCEEDED),
        failed: this.rollouts(RolloutStatus.FAILED),
        cancelled: this.rollouts(RolloutStatus.CANCELLED),
      },
      totalCapacity: this.totalCapacity,
      usedCapacity: this.usedCapacity,
      queueDepth: this.queuedSince.size,
      oldestQueuedAge: oldest.done ? undefined : durationFromMs(Math.max(0, now - oldest.value)),
      unroutableQueued: this.routing.unroutableQueued(),
      summaryTime: toTimestamp(now),
    });
  }

  private countWorker(record: WorkerRecord, sign: 1 | -1) {
    const { worker } = record;
    this.workerTotal += sign;
    this.workersByStatus.set(worker.status, this.workers(worker.status) + sign);
    if (worker.connected) {
      this.connected += sign;
      this.totalCapacity += sign * worker.capacity;
    }
    this.usedCapacity += sign * worker.currentAttemptIds.length;
    if (worker.cordoned) this.cordoned += sign;
  }

  private countRollout(status: RolloutStatus, sign: 1 | -1) {
    this.rolloutTotal += sign;
    this.rolloutsByStatus.set(status, this.rollouts(status) + sign);
  }

  private countVerdict(kind: VerdictKind) {
    this.verdicts.set(kind, (this.verdicts.get(kind) ?? 0) + 1);
  }
}

/** Whether a worker change leaves every count as it was (the common heartbeat case). */
function sameCounts(a: WorkerRecord, b: WorkerRecord): boolean {
  return (
    a.worker.status === b.worker.status &&
    a.worker.connected === b.worker.connected &&
    a.worker.capacity === b.worker.capacity &&
    a.worker.currentAttemptIds.length === b.worker.currentAttemptIds.length &&
    a.worker.cordoned === b.worker.cordoned
  );
}
