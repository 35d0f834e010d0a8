/**
 * When more than half of a sizeable fleet loses its streams within one grace
 * period, the cause is almost certainly the network or this server, not the
 * runners — which are likely still working and will reconnect. The brake
 * then holds UNRESPONSIVE verdicts for the dropped runners' attempts for a
 * while, so a network blip does not requeue the whole fleet's work. Small
 * fleets are never braked: there a drop says little about the network.
 */
export class MassDropBrake {
  private drops: number[] = [];
  private holdUntil = -Infinity;

  constructor(private readonly settings: { windowMs: number; minFleet: number; holdMs: number }) {}

  /**
   * A runner's stream was lost (not a clean Goodbye); `stillConnected` counts
   * the sessions left. Returns a log line when this drop engages the brake.
   */
  recordDrop(now: number, stillConnected: number): string | undefined {
    this.drops = this.drops.filter((time) => now - time <= this.settings.windowMs);
    this.drops.push(now);
    const fleet = stillConnected + this.drops.length;
    if (fleet < this.settings.minFleet || this.drops.length * 2 <= fleet || this.engaged(now)) return undefined;
    this.holdUntil = now + this.settings.holdMs;
    return (
      `mass-drop brake engaged: ${this.drops.length} of ${fleet} runners lost their streams within ` +
      `${this.settings.windowMs} ms — likely a network or server problem, not the runners; their attempts are ` +
      `not marked UNRESPONSIVE for the next ${this.settings.holdMs} ms`
    );
  }

  engaged(now: number): boolean {
    return now <= this.holdUntil;
  }

  /** The last moment of the current hold (in the past when not engaged). */
  releasesAt(): number {
    return this.holdUntil;
  }
}
