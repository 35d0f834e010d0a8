import { describe, expect, it } from "vitest";
import { DispatchQueue, type QueueEntry } from "../../src/server/dispatch/dispatch-queue.js";

const entry = (rolloutId: string, fields: Partial<QueueEntry> = {}): QueueEntry => ({
  rolloutId,
  priority: 0,
  requiredLabels: {},
  ranOn: new Set(),
  avoidUntil: 0,
  ...fields,
});

function drain(queue: DispatchQueue): string[] {
  const taken: string[] = [];
  for (;;) {
    const next = queue.pick({ workerId: "w", labels: {}, mayRetake: () => true });
    if (next === undefined) return taken;
    taken.push(next.rolloutId);
    queue.remove(next.rolloutId);
  }
}

describe("dispatch queue order", () => {
  it("without enqueue times, entries keep the order they were added in", () => {
    const queue = new DispatchQueue();
    for (const id of ["c", "a", "b"]) queue.add(entry(id));
    expect(drain(queue)).toEqual(["c", "a", "b"]);
  });

  it("with enqueue times (servers sharing a store), a late arrival takes its place; same-millisecond ones keep arrival order", () => {
    const queue = new DispatchQueue();
    queue.add(entry("low-0", { enqueuedAt: 1_000 }));
    queue.add(entry("low-2", { enqueuedAt: 1_020 }));
    // Learned from another server after low-2, though enqueued before it.
    queue.add(entry("low-1", { enqueuedAt: 1_010 }));
    queue.add(entry("low-3", { enqueuedAt: 1_020 }));
    queue.add(entry("high", { enqueuedAt: 1_030, priority: 5 }));
    expect(drain(queue)).toEqual(["high", "low-0", "low-1", "low-2", "low-3"]);
  });

  it("keeps its order across lanes of one priority, with entries removed from the middle", () => {
    const queue = new DispatchQueue();
    queue.add(entry("gpu-late", { enqueuedAt: 30, requiredLabels: { gpu: "1" } }));
    queue.add(entry("any-early", { enqueuedAt: 10 }));
    queue.add(entry("gpu-early", { enqueuedAt: 5, requiredLabels: { gpu: "1" } }));
    queue.add(entry("any-gone", { enqueuedAt: 20 }));
    queue.remove("any-gone");
    const taken: string[] = [];
    for (;;) {
      const next = queue.pick({ workerId: "w", labels: { gpu: "1" }, mayRetake: () => true });
      if (next === undefined) break;
      taken.push(next.rolloutId);
      queue.remove(next.rolloutId);
    }
    expect(taken).toEqual(["gpu-early", "any-early", "gpu-late"]);
  });
});
