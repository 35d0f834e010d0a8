import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { msOf } from "../../domain/time.js";

/**
 * When more than half of a sizeable fleet loses its streams within one grace
 * period, the cause is almost certainly the network or this server, not the
 * runners — which are likely still working and will reconnect. The brake
 * then holds UNRESPONSIVE verdicts for the dropped runners' attempts for a
 * while, so a network blip does not requeue the whole fleet's work. Small
 * fleets are never braked: there a drop says little about the network.
 *
 * Only established sessions count, on both sides of the ratio: ones that were
 * welcomed, have heartbeated since, and have been connected for at least
 * `establishedAfterMs` (one heartbeat interval). Sessions that connect and
 * drop at once — a crash-looping runner, or someone churning streams on
 * purpose — are neither the fleet nor its losses, so they can neither engage
 * the brake nor keep it engaged.
 */
export class MassDropBrake {
  private drops: number[] = [];
  private holdUntil = -Infinity;

  constructor(private readonly settings: { windowMs: number; minFleet: number; holdMs: number; establishedAfterMs: number }) {}

  /**
   * A runner's stream was lost (not a clean Goodbye). `connected` lists the
   * sessions left; it is only read when this drop could engage the brake.
   * Returns a log line when this drop engages it.
   */
  recordDrop(now: number, dropped: SessionSpan, connected: () => Iterable<SessionSpan>): string | undefined {
    if (!this.isEstablished(dropped, now)) return undefined;
    this.drops = this.drops.filter((time) => now - time <= this.settings.windowMs);
    this.drops.push(now);
    // Engaging needs drops > fleet / 2 and fleet >= minFleet, so fewer drops cannot.
    if (this.engaged(now) || this.drops.length * 2 <= this.settings.minFleet) return undefined;
    let stillConnected = 0;
    for (const session of connected()) if (this.isEstablished(session, now)) stillConnected++;
    const fleet = stillConnected + this.drops.length;
    if (fleet < this.settings.minFleet || this.drops.length * 2 <= fleet) return undefined;
    this.holdUntil = now + this.settings.holdMs;
    return (
      `mass-drop brake engaged: ${this.drops.length} of ${fleet} established runners lost their streams within ` +
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

  private isEstablished(session: SessionSpan, now: number): boolean {
    const { connectTime, lastHeartbeatTime } = session;
    return (
      connectTime !== undefined &&
      lastHeartbeatTime !== undefined &&
      lastHeartbeatTime >= connectTime &&
      now - connectTime >= this.settings.establishedAfterMs
    );
  }
}

/** When a session attached and when its worker last heartbeated (ms; undefined when never). */
export interface SessionSpan {
  connectTime: number | undefined;
  lastHeartbeatTime: number | undefined;
}

/** A worker's SessionSpan from its record (connect_time is set when its current session attached). */
export function sessionSpan(worker: { connectTime?: Timestamp; lastHeartbeatTime?: Timestamp } | undefined): SessionSpan {
  return { connectTime: msOf(worker?.connectTime), lastHeartbeatTime: msOf(worker?.lastHeartbeatTime) };
}
