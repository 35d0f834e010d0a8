/** What to do with one heartbeat: store it, only acknowledge it, or refuse it. */
export type Admission = "apply" | "coalesce" | "refuse";

/** Refused once a worker's excess beats in one second pass this many times its rate. */
const FLOOD_FACTOR = 10;
const IDLE_FORGET_MS = 60_000;
const SWEEP_EVERY = 10_000;

interface Bucket {
  tokens: number;
  at: number;
  windowStart: number;
  excess: number;
}

/**
 * Per-worker heartbeat rate, shared by the session stream and SendHeartbeat.
 * A token bucket (burst of 2 s worth) lets normal and briefly hurried beats
 * through; beats beyond it are coalesced (acknowledged, not stored: the next
 * stored beat carries the newest state), and a worker that keeps flooding
 * is refused with RESOURCE_EXHAUSTED. Coalesced and refused beats cost a map
 * lookup, so one flooding runner cannot take the store's time from others.
 */
export class HeartbeatGate {
  private readonly buckets = new Map<string, Bucket>();
  private admitted = 0;

  constructor(
    private readonly perSecond: number,
    private readonly now: () => number,
  ) {}

  admit(workerId: string): Admission {
    if (this.perSecond <= 0) return "apply";
    const now = this.now();
    if (++this.admitted % SWEEP_EVERY === 0) this.sweep(now);
    const burst = 2 * this.perSecond;
    let bucket = this.buckets.get(workerId);
    if (bucket === undefined) {
      bucket = { tokens: burst, at: now, windowStart: now, excess: 0 };
      this.buckets.set(workerId, bucket);
    }
    bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.at) * this.perSecond) / 1000);
    bucket.at = now;
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return "apply";
    }
    if (now - bucket.windowStart >= 1000) {
      bucket.windowStart = now;
      bucket.excess = 0;
    }
    bucket.excess++;
    return bucket.excess > FLOOD_FACTOR * this.perSecond ? "refuse" : "coalesce";
  }

  refusal(workerId: string): string {
    return `worker ${workerId} sends heartbeats far faster than ${this.perSecond} per second; slow down`;
  }

  private sweep(now: number) {
    for (const [workerId, bucket] of this.buckets) {
      if (now - bucket.at > IDLE_FORGET_MS) this.buckets.delete(workerId);
    }
  }
}
