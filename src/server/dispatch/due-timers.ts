import type { Clock, Millis } from "../domain/time.js";

/**
 * Named due times in a min-heap: each key has at most one due time; the
 * coordinator asks for the keys that are due and decides what they mean.
 * Rescheduling a key leaves its old heap entry behind, which is skipped when
 * it surfaces (lazy deletion), so every operation is O(log n) and nothing is
 * ever scanned.
 */
export class DueTimers {
  private heap: { due: Millis; key: string }[] = [];
  private readonly dueOf = new Map<string, Millis>();
  /** Called when the earliest due time moved earlier: re-arm the wake-up. */
  onEarlier: (due: Millis) => void = () => {};

  get size() {
    return this.dueOf.size;
  }

  /** Sets (or moves) the due time of `key`. */
  schedule(key: string, due: Millis) {
    if (this.dueOf.get(key) === due) return;
    const earliest = this.peek();
    this.dueOf.set(key, due);
    this.push({ due, key });
    if (earliest === undefined || due < earliest) this.onEarlier(due);
  }

  /** Sets the due time of `key` unless it is already due no later. */
  scheduleNoLaterThan(key: string, due: Millis) {
    const current = this.dueOf.get(key);
    if (current === undefined || due < current) this.schedule(key, due);
  }

  cancel(key: string) {
    this.dueOf.delete(key);
  }

  dueTime(key: string): Millis | undefined {
    return this.dueOf.get(key);
  }

  /** Removes and returns the keys due at `now`, earliest first. */
  takeDue(now: Millis): string[] {
    const due: string[] = [];
    for (;;) {
      const top = this.heap[0];
      if (top === undefined || top.due > now) break;
      this.pop();
      if (this.dueOf.get(top.key) !== top.due) continue;
      this.dueOf.delete(top.key);
      due.push(top.key);
    }
    return due;
  }

  /** The earliest due time, if any. */
  peek(): Millis | undefined {
    for (;;) {
      const top = this.heap[0];
      if (top === undefined) return undefined;
      if (this.dueOf.get(top.key) === top.due) return top.due;
      this.pop();
    }
  }

  private push(entry: { due: Millis; key: string }) {
    const heap = this.heap;
    heap.push(entry);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent]!.due <= entry.due) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = entry;
  }

  private pop() {
    const heap = this.heap;
    const last = heap.pop()!;
    if (heap.length === 0) return;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && heap[right]!.due < heap[left]!.due ? right : left;
      if (heap[child]!.due >= last.due) break;
      heap[i] = heap[child]!;
      i = child;
    }
    heap[i] = last;
  }
}

/**
 * Runs `fire` when the earliest due time of `timers` comes, with one
 * setTimeout armed for exactly that moment (re-armed when an earlier one is
 * scheduled), instead of scanning on an interval: a timer fires within a few
 * milliseconds of its due time whatever the heartbeat interval, and an idle
 * fleet costs nothing. Tests with a manual clock do not start it; they call
 * the coordinator's runWatchdog after advancing the clock.
 */
export function startTimerDriver(timers: DueTimers, clock: Clock, fire: () => Promise<void>, onError: (error: unknown) => void) {
  let timer: NodeJS.Timeout | undefined;
  let armedFor = Infinity;
  let running = false;
  let stopped = false;
  const arm = (due: Millis) => {
    if (stopped || running || due >= armedFor) return;
    clearTimeout(timer);
    armedFor = due;
    // setTimeout's longest delay is 2^31 - 1 ms; a later due time re-arms when this one fires.
    timer = setTimeout(run, Math.min(2 ** 31 - 1, Math.max(0, due - clock.now())));
    timer.unref();
  };
  const run = () => {
    armedFor = Infinity;
    timer = undefined;
    running = true;
    fire()
      .catch(onError)
      .finally(() => {
        running = false;
        const next = timers.peek();
        if (next !== undefined) arm(next);
      });
  };
  timers.onEarlier = arm;
  const first = timers.peek();
  if (first !== undefined) arm(first);
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      timers.onEarlier = () => {};
    },
  };
}
