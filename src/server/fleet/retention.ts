import { WorkerStatus } from "../../gen/runnerline/v1/worker_pb.js";
import type { TransitionObserver } from "../dispatch/transition-observer.js";
import { failedPrecondition, notFound } from "../domain/errors.js";
import type { Clock } from "../domain/time.js";
import type { Logger } from "../logging.js";
import type { Store } from "../store/store.js";

export interface RetentionOptions {
  store: Store;
  clock: Clock;
  /** Finished rollouts (with their attempts) and OFFLINE workers older than this are removed. */
  retainMs: number;
  /** Told of each removal, so counters follow. */
  observer: TransitionObserver;
  /** Entities removed per batch; each batch is one short synchronous step (default 200). */
  batchSize?: number;
  logger?: Logger;
  /**
   * Run first by each sweep: turns workers silent too long OFFLINE
   * (Coordinator.forgetSilentWorkers, --forget-after), so that this sweep and
   * the later ones remove them once they are past retention.
   */
  forgetSilentWorkers?: () => Promise<number>;
}

/**
 * Keeps the store from growing without bound: finished rollouts and their
 * attempts are removed `retainMs` after they ended, OFFLINE workers
 * `retainMs` after they were last heard from. Work is done in small batches,
 * each committed before the next, with the event loop free in between, so
 * dispatch never waits behind a large delete.
 */
export class Retention {
  private readonly batchSize: number;

  constructor(private readonly options: RetentionOptions) {
    this.batchSize = options.batchSize ?? 200;
  }

  /** Removes everything past retention, batch by batch; resolves with the number of rollouts and workers removed. */
  async sweep(): Promise<{ rollouts: number; workers: number }> {
    await this.options.forgetSilentWorkers?.();
    const removed = { rollouts: 0, workers: 0 };
    for (;;) {
      const batch = await this.sweepBatch();
      removed.rollouts += batch.rollouts;
      removed.workers += batch.workers;
      await this.options.store.commit();
      if (batch.rollouts < this.batchSize && batch.workers < this.batchSize) break;
      await new Promise((resolve) => setImmediate(resolve));
    }
    if (removed.rollouts + removed.workers > 0) {
      this.options.logger?.info({ ...removed, retainMs: this.options.retainMs }, "retention removed old entries");
    }
    return removed;
  }

  private async sweepBatch() {
    const { store, observer } = this.options;
    const cutoff = this.options.clock.now() - this.options.retainMs;
    const rollouts = await store.finishedRolloutsBefore(cutoff, this.batchSize);
    for (const rollout of rollouts) {
      await store.deleteRollout(rollout.rolloutId);
      observer.rolloutRemoved?.(rollout);
    }
    const workers = await store.offlineWorkersSilentSince(cutoff, this.batchSize);
    for (const record of workers) {
      await store.deleteWorker(record.worker.workerId);
      observer.workerRemoved?.(record);
    }
    return { rollouts: rollouts.length, workers: workers.length };
  }

  /**
   * DeleteWorker: an OFFLINE or UNKNOWN worker without a session or work goes
   * at once; the history of its attempts stays.
   */
  async deleteWorker(workerId: string): Promise<void> {
    const { store, observer } = this.options;
    const record = await store.getWorker(workerId);
    if (record === undefined) throw notFound(`worker ${workerId} not found`);
    const { status } = record.worker;
    if (status !== WorkerStatus.OFFLINE && status !== WorkerStatus.UNKNOWN) {
      throw failedPrecondition(`worker ${workerId} is ${WorkerStatus[status]}; only OFFLINE or UNKNOWN workers can be deleted`);
    }
    if (record.attachment === "open") {
      throw failedPrecondition(`worker ${workerId} holds a runner session; stop the runner first`);
    }
    if (record.worker.currentAttemptIds.length > 0) {
      throw failedPrecondition(`worker ${workerId} still holds attempts ${record.worker.currentAttemptIds.join(", ")}`);
    }
    await store.deleteWorker(workerId);
    observer.workerRemoved?.(record);
    await store.commit();
    this.options.logger?.info({ workerId }, "worker deleted");
  }
}

/** Runs `retention.sweep()` every `periodMs` (never two at once). */
export function startRetention(
  retention: Retention,
  periodMs: number,
  onError: (error: unknown) => void,
  /** Whether this server sweeps now (servers sharing a store leave it to their leader). */
  mine: () => boolean = () => true,
) {
  let running = false;
  const timer = setInterval(() => {
    if (running || !mine()) return;
    running = true;
    retention.sweep().catch(onError).finally(() => (running = false));
  }, periodMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
