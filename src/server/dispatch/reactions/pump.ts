import { create } from "@bufbuild/protobuf";
import type { Attempt } from "../../../gen/runnerline/v1/attempt_pb.js";
import type { Rollout } from "../../../gen/runnerline/v1/rollout_pb.js";
import { SessionResponseSchema } from "../../../gen/runnerline/v1/runner_pb.js";
import { DomainError } from "../../domain/errors.js";
import { newAttemptId } from "../../domain/ids.js";
import { type Labels, labelsMatch } from "../../domain/labels.js";
import type { Millis } from "../../domain/time.js";
import { WorkerCordonedError } from "../../transitions/steps.js";
import type { LiveSession, SessionRegistry } from "../sessions/registry.js";
import type { Effects } from "../turn/effects.js";
import type { Turn } from "../turn/turn.js";
import type { QueueEntry } from "./dispatch-queue.js";
import type { Routing } from "./routing.js";

export interface PumpOptions {
  turn: Turn;
  sessions: SessionRegistry;
  routing: Routing;
  /** Whether the server drains (then nothing is dispatched). */
  draining: () => boolean;
  /** Servers sharing the store judge routability against every server's sessions. */
  shared: boolean;
}

/**
 * The reaction to a queue or a waiting line that changed: queued rollouts go
 * to waiting sessions (routing.ts says who may take what), claimed on the
 * store and pushed once durable. Also answers what no connected worker can
 * take (unroutable) and how many workers are quarantined.
 */
export class Pump {
  private readonly turn: Turn;
  private readonly sessions: SessionRegistry;
  private readonly routing: Routing;
  private readonly draining: () => boolean;
  private readonly shared: boolean;

  constructor(options: PumpOptions) {
    this.turn = options.turn;
    this.sessions = options.sessions;
    this.routing = options.routing;
    this.draining = options.draining;
    this.shared = options.shared;
  }

  /**
   * Hands queued rollouts to waiting sessions, one credit each, round-robin
   * (SessionRegistry.serveRoundRobin). Each pick leaves the queue index at
   * once, so a concurrent pump never picks it again; then each session's
   * picks are claimed in one store operation, and the assignments go out
   * once that is durable.
   */
  pump(now: Millis, fx: Effects): Promise<void> | undefined {
    // Most calls find nothing to do: they answer at once, without a promise to wait for.
    if (this.draining() || this.routing.size === 0 || !this.sessions.anyWaiting) return undefined;
    return this.pumpPicks(now, fx);
  }

  private async pumpPicks(now: Millis, fx: Effects) {
    const picks = new Map<LiveSession, QueueEntry[]>();
    let picked = 0;
    this.sessions.serveRoundRobin(
      (session) => {
        const entry = this.routing.pickFor(session.link.workerId, session.labels, now, picked);
        if (entry === undefined) return false;
        picked += 1;
        this.routing.take(entry);
        const list = picks.get(session);
        if (list === undefined) picks.set(session, [entry]);
        else list.push(entry);
        return true;
      },
      () => this.routing.size > 0,
    );
    if (picks.size === 0) return;
    if (picks.size === 1) {
      const [session, entries] = picks.entries().next().value!;
      return this.claimFor(session, entries, now, fx);
    }
    await Promise.all(Array.from(picks, ([session, entries]) => this.claimFor(session, entries, now, fx)));
  }

  private async claimFor(session: LiveSession, entries: QueueEntry[], now: Millis, fx: Effects) {
    const link = session.link;
    let claimed: { rollout: Rollout; attempt: Attempt }[];
    try {
      const result = await this.turn.store.claimRollouts({
        // Written out, not spread from context(): a spread that adds properties takes V8's slow path.
        now,
        liveness: this.turn.liveness,
        workerId: link.workerId,
        epoch: session.epoch,
        rolloutIds: entries.map((entry) => entry.rolloutId),
        newAttemptId,
      });
      this.turn.absorb(result.changes, now, fx);
      claimed = result.claimed;
    } catch (error) {
      // Nothing was claimed: the picks go back to the queue (at its back), and the credits to the session unless
      // a newer session of the worker took over meanwhile (ABORTED). Any other failure (the database went away)
      // is the caller's to report.
      this.routing.putBack(entries);
      if (error instanceof WorkerCordonedError) {
        this.sessions.refund(link, entries.length);
        await this.learnCordon(link.workerId);
        return;
      }
      if (error instanceof DomainError && error.kind === "aborted") {
        link.credits = 0;
        return;
      }
      this.sessions.refund(link, entries.length);
      throw error;
    }
    // Candidates no longer queued (cancelled meanwhile, or claimed by another server sharing the store) were
    // skipped: their credits return, and the queue may hold others for them.
    this.sessions.refund(link, entries.length - claimed.length);
    for (const assignment of claimed) {
      const message = create(SessionResponseSchema, { message: { case: "assignment", value: assignment } });
      fx.add(() => link.send(message));
    }
    if (claimed.length < entries.length) await this.pump(now, fx);
  }

  /** A claim found the worker cordoned on another server before this one heard: routing follows the store. */
  async learnCordon(workerId: string) {
    const record = await this.turn.store.getWorker(workerId);
    if (record !== undefined) this.routing.track(record);
  }

  /** Workers quarantined now (for the fleet summary and /metrics). */
  quarantinedCount(): number {
    return this.routing.quarantinedCount(this.turn.clock.now());
  }

  /**
   * Queued rollouts that no connected worker can take: none carries their
   * required labels. Servers sharing a store judge against every server's
   * sessions, read from the store.
   */
  async unroutableRolloutIds(): Promise<string[]> {
    return !this.shared ? this.routing.unroutableIds() : this.unroutableInStore();
  }

  /** How many queued rollouts no connected worker can take (see unroutableRolloutIds). */
  unroutableCount(): number {
    return this.routing.unroutableCount();
  }

  private async unroutableInStore(): Promise<string[]> {
    const connected = [...(await this.turn.store.attachedWorkerLabels()).values()];
    const routable = (labels: Labels) => connected.some((carried) => labelsMatch(labels, carried));
    return (await this.turn.store.queuedRollouts())
      .filter((rollout) => !routable(rollout.config?.requiredLabels ?? {}))
      .map((rollout) => rollout.rolloutId);
  }
}
