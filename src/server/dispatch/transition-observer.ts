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
 * are listed once, here, and called with fixed arguments (no rest array): this
 * runs for every change of every transition and heartbeat.
 */
export function allObservers(...observers: TransitionObserver[]): Required<TransitionObserver> {
  const fanOut = <K extends keyof TransitionObserver>(key: K) => {
    const listeners = observers.flatMap((observer) => {
      const listener = observer[key] as ((a?: unknown, b?: unknown) => void) | undefined;
      return listener === undefined ? [] : [listener.bind(observer)];
    });
    return ((a?: unknown, b?: unknown) => {
      for (let i = 0; i < listeners.length; i++) listeners[i]!(a, b);
    }) as Required<TransitionObserver>[K];
  };
  return {
    rolloutChanged: fanOut("rolloutChanged"),
    attemptChanged: fanOut("attemptChanged"),
    workerChanged: fanOut("workerChanged"),
    rolloutRemoved: fanOut("rolloutRemoved"),
    workerRemoved: fanOut("workerRemoved"),
    quarantineHeldBack: fanOut("quarantineHeldBack"),
  };
}
