import type { Attempt } from "../../gen/runnerline/v1/attempt_pb.js";
import type { Rollout } from "../../gen/runnerline/v1/rollout_pb.js";
import { type Worker, WorkerStatus } from "../../gen/runnerline/v1/worker_pb.js";
import { isAttemptActive } from "../domain/attempt.js";
import { isRolloutTerminal } from "../domain/rollout.js";
import { msOf } from "../domain/time.js";
import type { WorkerRecord } from "../domain/worker.js";
import {
  ATTEMPT_SORT_FIELDS,
  type AttemptFilter,
  type ListQuery,
  matchesAttempt,
  matchesRollout,
  matchesWorker,
  type Page,
  pageOf,
  ROLLOUT_SORT_FIELDS,
  type RolloutFilter,
  WORKER_SORT_FIELDS,
  type WorkerFilter,
} from "./query.js";
import { EmbeddedStore } from "./embedded-store.js";
import type { Tables } from "./tables.js";

/** Everything in process memory: for tests and throw-away runs. */
export class MemoryStore extends EmbeddedStore {
  constructor() {
    super(new MemoryTables());
  }
}

/** The rows of a MemoryStore: maps. */
export class MemoryTables implements Tables {
  private readonly rollouts = new Map<string, Rollout>();
  private readonly attempts = new Map<string, Attempt>();
  private readonly active = new Map<string, Attempt>();
  /** Attempt ids per rollout, so retention removes a rollout's attempts without a scan. */
  private readonly attemptsOf = new Map<string, Set<string>>();
  private readonly workers = new Map<string, WorkerRecord>();
  private readonly queue = new QueueOrder();

  getRollout(rolloutId: string) {
    return this.rollouts.get(rolloutId);
  }

  putRollout(rollout: Rollout) {
    this.rollouts.set(rollout.rolloutId, rollout);
  }

  listRollouts(query: ListQuery<RolloutFilter>): Page<Rollout> {
    return pageOf(this.rollouts.values(), (r) => matchesRollout(query.filter, r), ROLLOUT_SORT_FIELDS, query);
  }

  getAttempt(attemptId: string) {
    return this.attempts.get(attemptId);
  }

  putAttempt(attempt: Attempt) {
    this.attempts.set(attempt.attemptId, attempt);
    let ids = this.attemptsOf.get(attempt.rolloutId);
    if (ids === undefined) this.attemptsOf.set(attempt.rolloutId, (ids = new Set()));
    ids.add(attempt.attemptId);
    if (isAttemptActive(attempt.status)) this.active.set(attempt.attemptId, attempt);
    else this.active.delete(attempt.attemptId);
  }

  listAttempts(query: ListQuery<AttemptFilter>): Page<Attempt> {
    return pageOf(this.attempts.values(), (a) => matchesAttempt(query.filter, a), ATTEMPT_SORT_FIELDS, query);
  }

  activeAttempts() {
    return [...this.active.values()];
  }

  getWorker(workerId: string) {
    return this.workers.get(workerId);
  }

  putWorker(record: WorkerRecord) {
    this.workers.set(record.worker.workerId, record);
  }

  listWorkers(query: ListQuery<WorkerFilter>): Page<Worker> {
    const workers = Array.from(this.workers.values(), (r) => r.worker);
    return pageOf(workers, (w) => matchesWorker(query.filter, w), WORKER_SORT_FIELDS, query);
  }

  workersWithStatus(statuses: WorkerStatus[]) {
    return [...this.workers.values()].filter((r) => statuses.includes(r.worker.status));
  }

  pushQueue(rolloutId: string) {
    this.queue.push(rolloutId);
  }

  removeFromQueue(rolloutId: string) {
    this.queue.remove(rolloutId);
  }

  queuedRolloutIds() {
    return this.queue.ids();
  }

  queueLength() {
    return this.queue.size;
  }

  finishedRolloutsBefore(cutoff: number, limit: number): Rollout[] {
    const found: Rollout[] = [];
    for (const rollout of this.rollouts.values()) {
      if (found.length >= limit) break;
      const end = msOf(rollout.endTime);
      if (isRolloutTerminal(rollout.status) && end !== undefined && end < cutoff) found.push(rollout);
    }
    return found;
  }

  deleteRollout(rolloutId: string) {
    this.rollouts.delete(rolloutId);
    this.queue.remove(rolloutId);
    for (const attemptId of this.attemptsOf.get(rolloutId) ?? []) {
      this.attempts.delete(attemptId);
      this.active.delete(attemptId);
    }
    this.attemptsOf.delete(rolloutId);
  }

  offlineWorkersSilentSince(cutoff: number, limit: number): WorkerRecord[] {
    const found: WorkerRecord[] = [];
    for (const record of this.workers.values()) {
      if (found.length >= limit) break;
      if (record.worker.status === WorkerStatus.OFFLINE && lastHeardOf(record.worker) < cutoff) found.push(record);
    }
    return found;
  }

  deleteWorker(workerId: string) {
    this.workers.delete(workerId);
  }

  commit() {
    return Promise.resolve();
  }

  close() {
    return Promise.resolve();
  }
}

/** When a worker was last heard from, for retention; the SQL twin is in sqlite/statements.ts (offlineSilent). */
export function lastHeardOf(worker: Worker): number {
  return msOf(worker.lastHeartbeatTime) ?? msOf(worker.connectTime) ?? msOf(worker.createTime) ?? 0;
}

/** The queue's order: a Map keeps insertion order, and re-pushing moves an id to the back. */
class QueueOrder {
  private readonly order = new Map<string, true>();

  get size() {
    return this.order.size;
  }

  push(id: string) {
    this.order.delete(id);
    this.order.set(id, true);
  }

  remove(id: string) {
    this.order.delete(id);
  }

  ids(): string[] {
    return [...this.order.keys()];
  }
}
