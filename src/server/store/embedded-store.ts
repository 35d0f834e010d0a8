import type { Attempt } from "../../gen/runnerline/v1/attempt_pb.js";
import type { Rollout } from "../../gen/runnerline/v1/rollout_pb.js";
import { type Worker, WorkerStatus } from "../../gen/runnerline/v1/worker_pb.js";
import { DomainError } from "../domain/errors.js";
import type { Labels } from "../domain/labels.js";
import { rolloutEffects } from "../domain/rollout.js";
import type { WorkerRecord } from "../domain/worker.js";
import { type Changes, type RowReader, WorkingSet } from "../transitions/changes.js";
import {
  type AttemptStep,
  type ClaimRequest,
  type Claimed,
  changeAttempt,
  changeRollout,
  changeWorker,
  claim,
  type RolloutStep,
  type SessionFence,
  type TransitionContext,
  type WorkerStep,
} from "../transitions/steps.js";
import type { AttemptFilter, ListQuery, Page, RolloutFilter, WorkerFilter } from "./query.js";
import type { Store } from "./store.js";
import type { Tables } from "./tables.js";

/** The statuses a worker holding a session can have. */
const SESSION_STATUSES = [WorkerStatus.IDLE, WorkerStatus.BUSY, WorkerStatus.UNKNOWN];

/**
 * A Store inside this process (memory or SQLite tables): there is one writer,
 * so an operation is atomic by running to completion synchronously — it
 * reads its rows, applies its step and writes the changes before anything
 * else runs — and the operations of one event-loop turn share the tables'
 * transaction (group commit). Fences are checked all the same, so that a
 * session replaced meanwhile changes nothing here either.
 */
export class EmbeddedStore implements Store {
  private readonly rows: RowReader;

  constructor(protected readonly tables: Tables) {
    this.rows = {
      rollout: (id) => tables.getRollout(id),
      attempt: (id) => tables.getAttempt(id),
      worker: (id) => tables.getWorker(id),
    };
  }

  // ---- reads ----------------------------------------------------------------

  async getRollout(rolloutId: string): Promise<Rollout | undefined> {
    return this.tables.getRollout(rolloutId);
  }

  async getRollouts(rolloutIds: readonly string[]): Promise<Rollout[]> {
    return rolloutIds.map((id) => this.tables.getRollout(id)).filter((r): r is Rollout => r !== undefined);
  }

  async listRollouts(query: ListQuery<RolloutFilter>): Promise<Page<Rollout>> {
    return this.tables.listRollouts(query);
  }

  async getAttempt(attemptId: string): Promise<Attempt | undefined> {
    return this.tables.getAttempt(attemptId);
  }

  async listAttempts(query: ListQuery<AttemptFilter>): Promise<Page<Attempt>> {
    return this.tables.listAttempts(query);
  }

  async attemptsOfRollouts(rolloutIds: readonly string[]): Promise<Map<string, Attempt[]>> {
    const bySequence = { orderBy: [{ field: "sequence_id", descending: false }], offset: 0, limit: Number.MAX_SAFE_INTEGER };
    const found = new Map<string, Attempt[]>();
    for (const rolloutId of new Set(rolloutIds)) {
      const { items } = this.tables.listAttempts({ filter: { rolloutId, workerId: "", statuses: [] }, ...bySequence });
      if (items.length > 0) found.set(rolloutId, items);
    }
    return found;
  }

  async getWorker(workerId: string): Promise<WorkerRecord | undefined> {
    return this.tables.getWorker(workerId);
  }

  async listWorkers(query: ListQuery<WorkerFilter>): Promise<Page<Worker>> {
    return this.tables.listWorkers(query);
  }

  async workersWithStatus(statuses: WorkerStatus[]): Promise<WorkerRecord[]> {
    return this.tables.workersWithStatus(statuses);
  }

  async attachedWorkerLabels(): Promise<Map<string, Labels>> {
    const attached = new Map<string, Labels>();
    for (const { worker, attachment } of this.tables.workersWithStatus(SESSION_STATUSES)) {
      if (attachment === "open") attached.set(worker.workerId, worker.labels);
    }
    return attached;
  }

  async activeAttempts(): Promise<Attempt[]> {
    return this.tables.activeAttempts();
  }

  async queuedRollouts(): Promise<Rollout[]> {
    const rollouts: Rollout[] = [];
    for (const id of this.tables.queuedRolloutIds()) {
      const rollout = this.tables.getRollout(id);
      if (rollout !== undefined) rollouts.push(rollout);
    }
    return rollouts;
  }

  async queuedRolloutIds(): Promise<string[]> {
    return this.tables.queuedRolloutIds();
  }

  async queueLength(): Promise<number> {
    return this.tables.queueLength();
  }

  async finishedRolloutsBefore(cutoff: number, limit: number): Promise<Rollout[]> {
    return this.tables.finishedRolloutsBefore(cutoff, limit);
  }

  async offlineWorkersSilentSince(cutoff: number, limit: number): Promise<WorkerRecord[]> {
    return this.tables.offlineWorkersSilentSince(cutoff, limit);
  }

  // ---- atomic operations ----------------------------------------------------

  async enqueueRollouts(rollouts: Rollout[]): Promise<Changes> {
    for (const rollout of rollouts) {
      if (this.tables.getRollout(rollout.rolloutId) !== undefined) {
        throw new DomainError("already_exists", `rollout ${rollout.rolloutId} exists`);
      }
    }
    const rows = new WorkingSet(this.rows);
    for (const rollout of rollouts) rows.setRollout(rollout);
    return this.persist(rows.changes());
  }

  async claimRollouts(request: ClaimRequest): Promise<{ claimed: Claimed[]; changes: Changes }> {
    const rows = new WorkingSet(this.rows);
    const claimed = claim(rows, request);
    return { claimed, changes: this.persist(rows.changes()) };
  }

  async changeAttempt(attemptId: string, fence: SessionFence | undefined, step: AttemptStep, context: TransitionContext): Promise<Changes> {
    const rows = new WorkingSet(this.rows);
    changeAttempt(rows, attemptId, fence, step, context);
    return this.persist(rows.changes());
  }

  async changeRollout(rolloutId: string, step: RolloutStep, context: TransitionContext): Promise<Changes> {
    const rows = new WorkingSet(this.rows);
    changeRollout(rows, rolloutId, step, context);
    return this.persist(rows.changes());
  }

  async changeWorker(workerId: string, fence: SessionFence | undefined, step: WorkerStep): Promise<Changes> {
    const rows = new WorkingSet(this.rows);
    changeWorker(rows, workerId, fence, step);
    return this.persist(rows.changes());
  }

  async moveToBackOfQueue(rolloutId: string): Promise<void> {
    this.tables.pushQueue(rolloutId);
  }

  async deleteRollout(rolloutId: string): Promise<void> {
    this.tables.deleteRollout(rolloutId);
  }

  async deleteWorker(workerId: string): Promise<void> {
    this.tables.deleteWorker(workerId);
  }

  commit(): Promise<void> {
    return this.tables.commit();
  }

  close(): Promise<void> {
    return this.tables.close();
  }

  /** Writes what an operation changed, with the queue entries its rollouts' moves imply. */
  private persist(changes: Changes): Changes {
    for (const { before, after } of changes.attempts) this.tables.putAttempt(after, before);
    for (const { before, after } of changes.rollouts) {
      this.tables.putRollout(after, before);
      const effects = rolloutEffects(before, after);
      if (effects.enqueue) this.tables.pushQueue(after.rolloutId);
      if (effects.dequeue) this.tables.removeFromQueue(after.rolloutId);
    }
    for (const { before, after } of changes.workers) this.tables.putWorker(after, before);
    return changes;
  }
}
