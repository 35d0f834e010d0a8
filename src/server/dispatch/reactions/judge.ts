import type { Attempt } from "../../../gen/runnerline/v1/attempt_pb.js";
import { AttemptStatus } from "../../../gen/runnerline/v1/attempt_pb.js";
import type { Worker } from "../../../gen/runnerline/v1/worker_pb.js";
import { isAttemptActive } from "../../domain/attempt.js";
import { failedPrecondition, notFound } from "../../domain/errors.js";
import {
  nextFailureStreak,
  type QuarantinePolicy,
  quarantineDecision,
  quarantineRoom,
  successClearsQuarantine,
  workerOutcome,
} from "../../domain/quarantine.js";
import { isRolloutQueued } from "../../domain/rollout.js";
import { type Millis, msOf } from "../../domain/time.js";
import { clearQuarantine, quarantineWorker, type WorkerRecord } from "../../domain/worker.js";
import type { ReplicaBus } from "../../replicas/bus.js";
import type { Changes } from "../../transitions/changes.js";
import { cancelMessage } from "../sessions/messages.js";
import type { SessionRegistry } from "../sessions/registry.js";
import { Effects } from "../turn/effects.js";
import type { Turn } from "../turn/turn.js";
import type { Watchdog } from "../timers/watchdog.js";
import type { TransitionObserver } from "../transition-observer.js";
import type { FleetOutcomes } from "./fleet-outcomes.js";
import type { Pump } from "./pump.js";
import type { Routing } from "./routing.js";

export interface JudgeOptions {
  turn: Turn;
  pump: Pump;
  sessions: SessionRegistry;
  routing: Routing;
  watchdog: Watchdog;
  quarantinePolicy: QuarantinePolicy;
  /** The fleet's attempt outcomes over the quarantine window: a failing worker is judged against the rest. */
  outcomes: FleetOutcomes;
  observer?: TransitionObserver;
  bus?: ReplicaBus;
  log: (line: string) => void;
}

/**
 * Reactions to attempts that ended: the runners still holding them are told
 * to stop, and their workers are judged — a failure streak
 * (domain/quarantine.ts) quarantines a worker, a success on probation clears
 * it; an operator may lift it (releaseWorker).
 */
export class Judge {
  private readonly turn: Turn;
  private readonly pump: Pump;
  private readonly sessions: SessionRegistry;
  private readonly routing: Routing;
  private readonly watchdog: Watchdog;
  private readonly quarantinePolicy: QuarantinePolicy;
  private readonly outcomes: FleetOutcomes;
  private readonly observer: TransitionObserver | undefined;
  private readonly bus: ReplicaBus | undefined;
  private readonly log: (line: string) => void;
  /** Per worker, the end times of its latest failed attempts in a row (process memory only). */
  private readonly failureStreaks = new Map<string, Millis[]>();

  constructor(options: JudgeOptions) {
    this.turn = options.turn;
    this.pump = options.pump;
    this.sessions = options.sessions;
    this.routing = options.routing;
    this.watchdog = options.watchdog;
    this.quarantinePolicy = options.quarantinePolicy;
    this.outcomes = options.outcomes;
    this.observer = options.observer;
    this.bus = options.bus;
    this.log = options.log;
  }

  /** Runners holding attempts that their rollout's end aborted are told to stop. */
  cancelAbortedAttempts(changes: Changes, reason: string, fx: Effects) {
    for (const { before, after } of changes.attempts) {
      if (before !== undefined && isAttemptActive(before.status) && !isAttemptActive(after.status)) {
        if (this.sessions.get(after.workerId) !== undefined) this.turn.sendTo(after.workerId, cancelMessage(after.attemptId, reason), fx);
        // Its runner may hold a session on another server: that one tells it, once this is committed.
        else fx.add(() => this.bus?.publish({ kind: "stop", ids: [after.attemptId] }));
      }
    }
  }

  /** Judges the workers of the attempts that `changes` ended (see judgeWorker). */
  judgeEnded(changes: Changes, now: Millis, fx: Effects): Promise<void> | undefined {
    const ended = changes.attempts.filter(({ before, after }) => {
      if (before === undefined || !isAttemptActive(before.status) || isAttemptActive(after.status)) return false;
      // Every outcome counts for the fleet, against which a failing worker is judged.
      const rollout = changes.rollouts.find((c) => c.after.rolloutId === after.rolloutId)?.after;
      const retried = rollout !== undefined && isRolloutQueued(rollout.status);
      this.outcomes.record(after.workerId, after.rolloutId, workerOutcome(after), retried, now);
      return this.mayJudge(after, changes);
    });
    // The common case (nothing ended, or a healthy worker's success) needs no store operation and no promise.
    if (ended.length === 0) return undefined;
    return (async () => {
      for (const { after } of ended) {
        const record = changes.workers.find((c) => c.after.worker.workerId === after.workerId)?.after;
        await this.judgeWorker(after, record, now, fx);
      }
    })();
  }

  /**
   * Whether an ended attempt can change its worker's health record. The common
   * case, kept cheap: a healthy worker's success only matters if it ends a quarantine.
   */
  private mayJudge(attempt: Attempt, changes: Changes): boolean {
    const outcome = workerOutcome(attempt);
    if (outcome === "neutral") return false;
    const workerId = attempt.workerId;
    if (outcome === "success" && !this.failureStreaks.has(workerId) && !this.routing.knowsQuarantine(workerId)) {
      const worker = changes.workers.find((c) => c.after.worker.workerId === workerId)?.after.worker;
      if (worker !== undefined && worker.quarantineCount === 0 && worker.quarantineUntil === undefined) return false;
    }
    return true;
  }

  /** A worker's attempt ended: its health record, and quarantine when it keeps failing. */
  private async judgeWorker(attempt: Attempt, known: WorkerRecord | undefined, now: Millis, fx: Effects) {
    const outcome = workerOutcome(attempt);
    const workerId = attempt.workerId;
    const streak = nextFailureStreak(this.failureStreaks.get(workerId) ?? [], outcome, now, this.quarantinePolicy);
    if (streak.length === 0) this.failureStreaks.delete(workerId);
    else this.failureStreaks.set(workerId, streak);
    const record = known ?? (await this.turn.store.getWorker(workerId));
    if (record === undefined) return;
    if (successClearsQuarantine(record.worker, outcome, now)) {
      this.turn.absorb(await this.turn.store.changeWorker(workerId, undefined, (r) => clearQuarantine(r ?? record)), now, fx);
      this.log(`worker ${workerId}: quarantine cleared by a success (attempt ${attempt.attemptId})`);
      return;
    }
    if (outcome !== "failure") return;
    const last = `attempt ${attempt.attemptId} ${AttemptStatus[attempt.status]}${attempt.error?.message ? `: ${attempt.error.message}` : ""}`;
    // The fleet is compared (a pass over every session) only when the streak alone would quarantine.
    const fleet = () => {
      const others = this.routing.connectedCount() - (this.sessions.get(workerId) !== undefined || this.routing.hasRemoteSession(workerId) ? 1 : 0);
      const otherSessions = this.sessions.workerIds().filter((id) => id !== workerId);
      const steady = this.outcomes.steadyWithoutOutcomes(otherSessions, streak[0] ?? now, now);
      return this.outcomes.compare(workerId, others, steady, now);
    };
    const decision = quarantineDecision(record.worker, streak, this.quarantinePolicy, now, last, fleet);
    if (decision === undefined) return;
    const connected = this.routing.connectedCount();
    if (!quarantineRoom(connected, this.routing.quarantinedConnected(now), this.quarantinePolicy.maxPercent)) {
      // So many failing runners say more about the work than about them: the fleet keeps its capacity.
      if (!this.outcomes.reportHeldBack(workerId, now)) return;
      this.observer?.quarantineHeldBack?.();
      this.log(
        `worker ${workerId} not quarantined: ${this.routing.quarantinedConnected(now)} of ${connected} connected workers ` +
          `are already (at most ${this.quarantinePolicy.maxPercent} %); it would have been: ${decision.reason}`,
      );
      return;
    }
    const quarantined = await this.turn.store.changeWorker(workerId, undefined, (r) =>
      quarantineWorker(r ?? record, decision.until, decision.reason, decision.count),
    );
    this.turn.absorb(quarantined, now, fx);
    this.failureStreaks.delete(workerId);
    this.watchdog.schedule("quarantine", workerId, decision.until);
    this.log(
      `worker ${workerId} quarantined for ${Math.round((decision.until - now) / 1000)} s ` +
        `(until ${new Date(decision.until).toISOString()}): ${decision.reason}`,
    );
  }

  /** Lifts a worker's quarantine (and probation) at once; it may take work again. */
  async releaseWorker(workerId: string): Promise<Worker> {
    const now = this.turn.clock.now();
    const record = await this.turn.store.getWorker(workerId);
    if (record === undefined) throw notFound(`worker ${workerId} not found`);
    const quarantined = (msOf(record.worker.quarantineUntil) ?? -Infinity) > now;
    if (!quarantined && record.worker.quarantineCount === 0) throw failedPrecondition(`worker ${workerId} is not quarantined`);
    const fx = new Effects();
    const released = await this.turn.store.changeWorker(workerId, undefined, (r) => clearQuarantine(r ?? record));
    this.turn.absorb(released, now, fx);
    this.failureStreaks.delete(workerId);
    this.log(`worker ${workerId} released from quarantine by an operator`);
    await this.pump.pump(now, fx);
    await this.turn.settle(fx);
    return released.workers[0]?.after.worker ?? record.worker;
  }
}
