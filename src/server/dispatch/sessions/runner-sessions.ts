import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { AttemptStatus } from "../../../gen/runnerline/v1/attempt_pb.js";
import { type SessionResponse, SessionResponseSchema } from "../../../gen/runnerline/v1/runner_pb.js";
import { expireAttempt, isAttemptActive, isAttemptCurrent, recordSignOfLife } from "../../domain/attempt.js";
import { DomainError } from "../../domain/errors.js";
import { type Clock, type Millis, toTimestamp } from "../../domain/time.js";
import {
  attachSession,
  detachSession,
  type Liveness,
  newWorkerRecord,
  recordWorkRequest,
  type SessionOpening,
} from "../../domain/worker.js";
import type { ReplicaBus } from "../../replicas/bus.js";
import type { Store } from "../../store/store.js";
import { NO_CHANGES } from "../../transitions/changes.js";
import type { Judge } from "../reactions/judge.js";
import type { Pump } from "../reactions/pump.js";
import type { Routing } from "../reactions/routing.js";
import type { SessionLink } from "../session-link.js";
import { type MassDropBrake, sessionSpan } from "../timers/mass-drop-brake.js";
import { Effects } from "../turn/effects.js";
import type { Turn } from "../turn/turn.js";
import type { Drain } from "./drain.js";
import { cancelMessage, fenceOf, operatorDrainMessage } from "./messages.js";
import type { SessionRegistry } from "./registry.js";

export interface RunnerSessionsOptions {
  turn: Turn;
  judge: Judge;
  pump: Pump;
  sessions: SessionRegistry;
  routing: Routing;
  brake: MassDropBrake;
  drain: Drain;
  heartbeatIntervalMs: number;
  bus?: ReplicaBus;
  log: (line: string) => void;
}

/**
 * Runner sessions (RunnerService.Session) and their credits: Hello attaches
 * a session (fencing off an older one of the same worker) and sorts the
 * attempts its runner still runs, Ready and credits returned with reports
 * ask for work, Goodbye and the stream's end detach it. The live sessions
 * and the waiting line are in SessionRegistry (registry.ts).
 */
export class RunnerSessions {
  private readonly turn: Turn;
  private readonly store: Store;
  private readonly clock: Clock;
  private readonly liveness: Liveness;
  private readonly judge: Judge;
  private readonly pump: Pump;
  private readonly sessions: SessionRegistry;
  private readonly routing: Routing;
  private readonly brake: MassDropBrake;
  private readonly drain: Drain;
  private readonly heartbeatIntervalMs: number;
  private readonly bus: ReplicaBus | undefined;
  private readonly log: (line: string) => void;

  constructor(options: RunnerSessionsOptions) {
    this.turn = options.turn;
    this.store = options.turn.store;
    this.clock = options.turn.clock;
    this.liveness = options.turn.liveness;
    this.judge = options.judge;
    this.pump = options.pump;
    this.sessions = options.sessions;
    this.routing = options.routing;
    this.brake = options.brake;
    this.drain = options.drain;
    this.heartbeatIntervalMs = options.heartbeatIntervalMs;
    this.bus = options.bus;
    this.log = options.log;
  }

  /**
   * Hello: attaches the session (replacing an older one of the same worker,
   * whose epoch it moves on), welcomes it, and sorts the attempts it says it
   * still runs into resumed ones and ones it must cancel. Attempts the server
   * thinks it holds but it does not list were lost with its previous
   * process: UNRESPONSIVE.
   */
  async openSession(link: SessionLink, opening: SessionOpening, runningAttemptIds: readonly string[]) {
    const now = this.clock.now();
    const fx = new Effects();
    const attached = await this.store.changeWorker(link.workerId, undefined, (r) =>
      attachSession(r ?? newWorkerRecord(link.workerId, now), opening, this.liveness, now),
    );
    const record = attached.workers[0]!.after;
    link.epoch = record.epoch;
    // A quarantine set elsewhere (another server, or before a restart) holds here too.
    this.routing.track(record);
    const previous = this.sessions.attach({ link, labels: opening.labels, epoch: record.epoch, worker: record.worker });
    previous?.link.replaced({ sessionId: link.sessionId, peer: link.peer ?? opening.peer });
    this.bus?.publish({ kind: "session", ids: [link.workerId], epoch: record.epoch });
    this.turn.absorb(attached, now, fx);
    const fence = fenceOf(link);
    const listed = new Set(runningAttemptIds);
    for (const attemptId of record.worker.currentAttemptIds) {
      if (listed.has(attemptId)) continue;
      const lost = await this.store.changeAttempt(attemptId, fence, (attempt) =>
        isAttemptActive(attempt.status)
          ? expireAttempt(attempt, AttemptStatus.UNRESPONSIVE, "the runner reconnected without it", now)
          : attempt,
        this.turn.context(now),
      );
      this.turn.absorb(lost, now, fx);
      await this.judge.judgeEnded(lost, now, fx);
    }
    const resumed: string[] = [];
    const cancels: SessionResponse[] = [];
    for (const attemptId of listed) {
      let current = false;
      const signs = await this.store
        .changeAttempt(attemptId, fence, (attempt, rollout) => {
          current = attempt.workerId === link.workerId && rollout !== undefined && isAttemptCurrent(attempt, rollout);
          return current ? recordSignOfLife(attempt, now) : attempt;
        }, this.turn.context(now))
        .catch((error: unknown) => {
          if (error instanceof DomainError && error.kind === "not_found") return NO_CHANGES;
          throw error;
        });
      this.turn.absorb(signs, now, fx);
      if (current) resumed.push(attemptId);
      else cancels.push(cancelMessage(attemptId, "the server no longer counts this attempt as yours"));
    }
    const welcome = create(SessionResponseSchema, {
      message: {
        case: "welcome",
        value: {
          sessionId: link.sessionId,
          heartbeatInterval: durationFromMs(this.heartbeatIntervalMs),
          serverTime: toTimestamp(now),
          resumedAttemptIds: resumed,
        },
      },
    });
    await this.pump.pump(now, fx);
    await this.turn.settle(fx, () => {
      link.send(welcome);
      for (const cancel of cancels) link.send(cancel);
      // A runner that reconnects during a drain hears it at once: it may report what it holds, and take nothing new.
      if (this.drain.drainMessage !== undefined) link.send(this.drain.drainMessage);
      // An operator drained it while it was away: it finishes what it resumed, then leaves.
      if (record.worker.draining) link.send(operatorDrainMessage(record.worker));
    });
  }

  /** Ready: the runner can take `slots` more assignments now. */
  async grantCredits(link: SessionLink, slots: number) {
    if (!this.sessions.isLive(link) || link.leaving) return;
    const now = this.clock.now();
    const fx = new Effects();
    await this.askForWork(link, slots, now, fx);
    await this.pump.pump(now, fx);
    await this.turn.settle(fx);
  }

  /** A credit returned with a report counts as Ready 1: the runner asks for work. */
  async returnCredit(link: SessionLink, now: Millis, fx: Effects) {
    if (this.sessions.isLive(link) && !link.leaving) await this.askForWork(link, 1, now, fx);
  }

  private async askForWork(link: SessionLink, slots: number, now: Millis, fx: Effects) {
    this.sessions.grant(link, slots, now);
    const asked = await this.store.changeWorker(link.workerId, fenceOf(link), (r) =>
      recordWorkRequest(r ?? newWorkerRecord(link.workerId, now), this.liveness, now),
    );
    this.turn.absorb(asked, now, fx);
  }

  /** Goodbye: finish what it holds, take nothing new. */
  goodbye(link: SessionLink) {
    link.leaving = true;
    link.credits = 0;
  }

  /** The stream ended; a newer session of the same worker may already have taken over. */
  async closeSession(link: SessionLink) {
    const session = this.sessions.liveOf(link);
    if (session === undefined) return;
    this.sessions.detach(link);
    const now = this.clock.now();
    if (!link.leaving && !this.drain.draining) {
      const spans = () => Array.from(this.sessions.values(), (s) => sessionSpan(s.worker));
      const engaged = this.brake.recordDrop(now, sessionSpan(session.worker), spans);
      if (engaged !== undefined) this.log(engaged);
    }
    const fx = new Effects();
    const detached = await this.store.changeWorker(link.workerId, fenceOf(link), (r) =>
      detachSession(r ?? newWorkerRecord(link.workerId, now), link.leaving, this.liveness, now),
    );
    this.turn.absorb(detached, now, fx);
    // Retries that kept away from the other waiting runners for this one's sake may now go back.
    await this.pump.pump(now, fx);
    await this.turn.settle(fx);
  }
}
