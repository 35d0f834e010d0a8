import { describe, expect, it } from "vitest";
import { allObservers, type TransitionObserver } from "../../src/server/dispatch/transition-observer.js";
import { attemptFixture, rolloutFixture } from "../fixtures.js";

describe("allObservers", () => {
  it("tells every observer of every event, in the order given, with `this` kept; missing handlers are skipped", () => {
    const heard: string[] = [];
    class Counting implements TransitionObserver {
      constructor(private readonly name: string) {}
      rolloutChanged(_: unknown, after: { rolloutId: string }) {
        heard.push(`${this.name}:rollout:${after.rolloutId}`);
      }
      attemptChanged(before: unknown, after: { attemptId: string }) {
        heard.push(`${this.name}:attempt:${before === undefined ? "new" : "changed"}:${after.attemptId}`);
      }
      quarantineHeldBack() {
        heard.push(`${this.name}:held back`);
      }
    }
    const partial: TransitionObserver = { rolloutRemoved: (rollout) => heard.push(`partial:removed:${rollout.rolloutId}`) };
    const all = allObservers(new Counting("a"), partial, new Counting("b"));
    const rollout = rolloutFixture({ rolloutId: "ro-1" });
    const attempt = attemptFixture({ attemptId: "at-1" });
    all.rolloutChanged(undefined, rollout);
    all.attemptChanged(undefined, attempt);
    all.attemptChanged(attempt, attempt);
    all.rolloutRemoved(rollout);
    all.workerChanged(undefined, { attachment: "none", suspect: false, epoch: 0, worker: {} as never });
    all.quarantineHeldBack();
    expect(heard).toEqual([
      "a:rollout:ro-1",
      "b:rollout:ro-1",
      "a:attempt:new:at-1",
      "b:attempt:new:at-1",
      "a:attempt:changed:at-1",
      "b:attempt:changed:at-1",
      "partial:removed:ro-1",
      "a:held back",
      "b:held back",
    ]);
  });
});
