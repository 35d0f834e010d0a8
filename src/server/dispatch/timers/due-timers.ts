import type { Clock, Millis } from "../../domain/time.js";

/**
 * Due times named by a kind and an id: each (kind, id) has at most one due
 * time, kept in a min-heap; the coordinator asks for the ones that are due
 * and decides what they mean. Rescheduling leaves the old heap entry behind,
 * skipped when it surfaces (lazy deletion), so every operation is O(log n) and
 * nothing is ever scanned. Kinds keep ids apart without building key strings
 * on the hot path.
 */
export class DueTimers<Kind extends string = string> {
  private heap: { due: Millis; kind: Kind; id: string }[] = [];
  private readonly dueOf = new Map<Kind, Map<string, Millis>>();
  /** Called when the earliest due time moved earlier: re-arm the wake-up. */
  onEarlier: (due: Millis) => void = () => {};

  get size() {
    let size = 0;
    for (const table of this.dueOf.values()) size += table.size;
    return size;
  }

  /** Sets (or moves) the due time of (kind, id). */
  schedule(kind: Kind, id: string, due: Millis) {
    const table = this.table(kind);
    if (table.get(id) === due) return;
    const earliest = this.peek();
    table.set(id, due);
    this.push({ due, kind, id });
    if (earliest === undefined || due < earliest) this.onEarlier(due);
  }

  /** Sets the due time of (kind, id) unless it is already due no later. */
  scheduleNoLaterThan(kind: Kind, id: string, due: Millis) {
    const current = this.dueOf.get(kind)?.get(id);
    if (current === undefined || due < current) this.schedule(kind, id, due);
  }

  cancel(kind: Kind, id: string) {
    this.dueOf.get(kind)?.delete(id);
  }

  dueTime(kind: Kind, id: string): Millis | undefined {
    return this.dueOf.get(kind)?.get(id);
  }

  /** Removes and returns what is due at `now`, earliest first. */
  takeDue(now: Millis): { kind: Kind; id: string }[] {
    const due: { kind: Kind; id: string }[] = [];
    for (;;) {
      const top = this.heap[0];
      if (top === undefined || top.due > now) break;
      this.pop();
      const table = this.dueOf.get(top.kind)!;
      if (table.get(top.id) !== top.due) continue;
      table.delete(top.id);
      due.push({ kind: top.kind, id: top.id });
    }
    return due;
  }

  /** The earliest due time, if any. */
  peek(): Millis | undefined {
    for (;;) {
      const top = this.heap[0];
      if (top === undefined) return undefined;
      if (this.dueOf.get(top.kind)?.get(top.id) === top.due) return top.due;
      this.pop();
    }
  }

  private table(kind: Kind): Map<string, Millis> {
    let table = this.dueOf.get(kind);
    if (table === undefined) this.dueOf.set(kind, (table = new Map()));
    return table;
  }

  private push(entry: { due: Millis; kind: Kind; id: string }) {
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
 * fleet costs nothing. It fires once that turn of the event loop has read
 * the sockets (see run). Tests with a manual clock do not start it; they
 * call the coordinator's runWatchdog after advancing the clock.
 */
export function startTimerDriver<Kind extends string>(timers: DueTimers<Kind>, clock: Clock, fire: () => Promise<void>, onError: (error: unknown) => void) {
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
    // Node runs due timers before it reads sockets. After the process stood still (a long GC pause, a frozen VM,
    // SIGSTOP), every check is overdue while the heartbeats and reports that arrived meanwhile still wait unread:
    // judged at once, healthy runners would turn UNKNOWN and their attempts UNRESPONSIVE. setImmediate runs after
    // this turn's poll phase, so what has arrived is applied first (test/liveness/paused-server.test.ts).
    new Promise<void>((resolve) => setImmediate(resolve))
      .then(fire)
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
