import type { Attempt } from "../../gen/runnerline/v1/attempt_pb.js";
import type { Rollout } from "../../gen/runnerline/v1/rollout_pb.js";
import type { WorkerRecord } from "../domain/worker.js";

/**
 * Told of every stored change, after the store has it (but before it is
 * committed): the fleet counters, metrics and event log follow the fleet
 * through this one seam instead of scanning the store. `before` is undefined
 * for a new entity. Observers must be cheap and must not throw: workers
 * change on every heartbeat.
 */
export interface TransitionObserver {
  rolloutChanged?(before: Rollout | undefined, after: Rollout): void;
  attemptChanged?(before: Attempt | undefined, after: Attempt): void;
  workerChanged?(before: WorkerRecord | undefined, after: WorkerRecord): void;
  /** Retention or DeleteWorker removed it from the store. */
  rolloutRemoved?(rollout: Rollout): void;
  workerRemoved?(record: WorkerRecord): void;
  /** A worker would have been quarantined, but the share of the fleet that may be is reached. */
  quarantineHeldBack?(): void;
}

/**
 * One observer that tells each of `observers` in turn. Each event's listeners
 * are listed once, here, and called with their fixed arguments: this runs for
 * every change of every transition and heartbeat, so it allocates nothing.
 */
export function allObservers(...observers: TransitionObserver[]): Required<TransitionObserver> {
  const listeners = <K extends keyof TransitionObserver>(key: K) =>
    observers.flatMap((observer) => {
      const listener = observer[key];
      return listener === undefined ? [] : [listener.bind(observer) as NonNullable<TransitionObserver[K]>];
    });
  const rollout = listeners("rolloutChanged");
  const attempt = listeners("attemptChanged");
  const worker = listeners("workerChanged");
  const rolloutRemoved = listeners("rolloutRemoved");
  const workerRemoved = listeners("workerRemoved");
  const heldBack = listeners("quarantineHeldBack");
  return {
    rolloutChanged: (before, after) => {
      for (let i = 0; i < rollout.length; i++) rollout[i]!(before, after);
    },
    attemptChanged: (before, after) => {
      for (let i = 0; i < attempt.length; i++) attempt[i]!(before, after);
    },
    workerChanged: (before, after) => {
      for (let i = 0; i < worker.length; i++) worker[i]!(before, after);
    },
    rolloutRemoved: (removed) => {
      for (let i = 0; i < rolloutRemoved.length; i++) rolloutRemoved[i]!(removed);
    },
    workerRemoved: (removed) => {
      for (let i = 0; i < workerRemoved.length; i++) workerRemoved[i]!(removed);
    },
    quarantineHeldBack: () => {
      for (let i = 0; i < heldBack.length; i++) heldBack[i]!();
    },
  };
}
