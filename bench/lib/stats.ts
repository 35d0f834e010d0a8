/** Small numeric helpers shared by the bench processes. */

export interface LatencySummary {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

/** Percentiles of `samples` (milliseconds); sorts a copy. */
export function summarize(samples: ArrayLike<number>): LatencySummary {
  const sorted = Float64Array.from(samples).sort();
  const at = (q: number) => (sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!);
  return { count: sorted.length, p50: at(0.5), p99: at(0.99), max: sorted.length === 0 ? NaN : sorted[sorted.length - 1]! };
}

/** Keeps at most `limit` samples, uniformly chosen (reservoir sampling), so long runs stay bounded in memory. */
export class Reservoir {
  readonly samples: number[] = [];
  seen = 0;
  constructor(private readonly limit = 100_000) {}

  add(value: number): void {
    this.seen++;
    if (this.samples.length < this.limit) {
      this.samples.push(value);
      return;
    }
    const slot = Math.floor(Math.random() * this.seen);
    if (slot < this.limit) this.samples[slot] = value;
  }

  reset(): void {
    this.samples.length = 0;
    this.seen = 0;
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `check` every `everyMs` until it returns true or `timeoutMs` passes; returns whether it did. */
export async function waitUntil(check: () => boolean, timeoutMs: number, everyMs = 10): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return true;
    await sleep(everyMs);
  }
  return check();
}
