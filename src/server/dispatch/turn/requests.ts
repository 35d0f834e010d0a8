import { create, equals } from "@bufbuild/protobuf";
import { type Attempt, AttemptErrorKind, AttemptStatus } from "../../../gen/runnerline/v1/attempt_pb.js";
import {
  type EnqueueRolloutRequest,
  EnqueueRolloutRequestSchema,
  type Rollout,
  RolloutStatus,
} from "../../../gen/runnerline/v1/rollout_pb.js";
import type { Worker } from "../../../gen/runnerline/v1/worker_pb.js";
import {
  type AttemptReport,
  applyReport,
  isAttemptCurrent,
  isRepeatedOutcome,
  recordLateReport,
  recordLateSignOfLife,
  recordSignOfLife,
} from "../../domain/attempt.js";
import { DomainError, failedPrecondition } from "../../domain/errors.js";
import { newAttemptId, newRolloutId } from "../../domain/ids.js";
import { cancelRollout, newRollout } from "../../domain/rollout.js";
import type { Clock, Millis } from "../../domain/time.js";
import { type HeartbeatData, type Liveness, newWorkerRecord, recordHeartbeat, recordWorkRequest } from "../../domain/worker.js";
import type { Store } from "../../store/store.js";
import { type Changes, NO_CHANGES } from "../../transitions/changes.js";
import { type AttemptStep, WorkerCordonedError } from "../../transitions/steps.js";
import type { Judge } from "../reactions/judge.js";
import type { Pump } from "../reactions/pump.js";
import type { Routing } from "../reactions/routing.js";
import type { SessionLink } from "../session-link.js";
import type { Drain } from "../sessions/drain.js";
import { cancelMessage, fenceOf } from "../sessions/messages.js";
import type { SessionRegistry } from "../sessions/registry.js";
import type { RunnerSessions } from "../sessions/runner-sessions.js";
import { Effects } from "./effects.js";
import type { Turn } from "./turn.js";

export interface RequestsOptions {
  turn: Turn;
  judge: Judge;
  pump: Pump;
  sessions: SessionRegistry;
  runnerSessions: RunnerSessions;
  routing: Routing;
  drain: Drain;
  /** Sees every recorded heartbeat (the telemetry history); must be cheap and must not throw. */
  onHeartbeat?: (workerId: string, data: HeartbeatData, now: Millis) => void;
}

/**
 * The requests that change rollouts, attempts and workers (enqueue, cancel,
 * unary dequeue, reports, heartbeats), each run as a turn: its store
 * operations, their changes absorbed, the reactions they call for (judging
 * ended attempts, the pump), then settled.
 */
export class Requests {
  private readonly turn: Turn;
  private readonly store: Store;
  private readonly clock: Clock;
  private readonly liveness: Liveness;
  private readonly judge: Judge;
  private readonly pump: Pump;
  private readonly sessions: SessionRegistry;
  private readonly runnerSessions: RunnerSessions;
  private readonly routing: Routing;
  private readonly drain: Drain;
  private readonly onHeartbeat: RequestsOptions["onHeartbeat"];

  constructor(options: RequestsOptions) {
    this.turn = options.turn;
    this.store = options.turn.store;
    this.clock = options.turn.clock;
    this.liveness = options.turn.liveness;
    this.judge = options.judge;
    this.pump = options.pump;
    this.sessions = options.sessions;
    this.runnerSessions = options.runnerSessions;
    this.routing = options.routing;
    this.drain = options.drain;
    this.onHeartbeat = options.onHeartbeat;
  }

  /**
   * Enqueues all or none; a repeated idempotency key returns the existing rollout. Ids given by the caller are
   * almost always new, so the batch is inserted without reading them first (a round trip on PostgreSQL); one
   * already taken (a replayed enqueue, or a clash) refuses the whole batch with ALREADY_EXISTS, and then the ids
   * are read and compared (`readFirst`), once. A request naming one id twice reads first: whether that is a
   * replay or a conflict depends on what the store holds.
   */
  async enqueue(requests: EnqueueRolloutRequest[], readFirst = repeatsAnId(requests)): Promise<Rollout[]> {
    const now = this.clock.now();
    const existing = readFirst
      ? await Promise.all(requests.map((request) => (request.rolloutId === "" ? undefined : this.store.getRollout(request.rolloutId))))
      : requests.map(() => undefined);
    const claimed = new Set<string>();
    const rollouts = requests.map((request, i) => {
      const found = existing[i];
      if (found !== undefined) {
        if (!sameEnqueueRequest(found, request)) {
          throw new DomainError("already_exists", `rollout ${request.rolloutId} exists with different content`);
        }
        return { rollout: found, fresh: false };
      }
      if (request.rolloutId !== "" && claimed.has(request.rolloutId)) {
        throw new DomainError("already_exists", `rollout ${request.rolloutId} appears twice in the request`);
      }
      claimed.add(request.rolloutId);
      return { rollout: newRollout(request, request.rolloutId || newRolloutId(), now), fresh: true };
    });
    const fresh = rollouts.filter((r) => r.fresh).map((r) => r.rollout);
    let changes = NO_CHANGES;
    try {
      if (fresh.length > 0) changes = await this.store.enqueueRollouts(fresh);
    } catch (error) {
      // An id is taken (by an earlier enqueue of the same rollout, or another): read them and compare, once.
      if (error instanceof DomainError && error.kind === "already_exists" && !readFirst) return this.enqueue(requests, true);
      throw error;
    }
    const fx = new Effects();
    this.turn.absorb(changes, now, fx);
    await this.pump.pump(now, fx);
    await this.turn.settle(fx);
    return rollouts.map((r) => r.rollout);
  }

  async cancel(rolloutId: string): Promise<Rollout> {
    const now = this.clock.now();
    const reason = "rollout cancelled";
    const changes = await this.store.changeRollout(rolloutId, (rollout) => ({
      after: cancelRollout(rollout, now),
      attemptErrorKind: AttemptErrorKind.CANCELLED,
      reason,
    }), this.turn.context(now));
    const fx = new Effects();
    this.turn.absorb(changes, now, fx);
    this.judge.cancelAbortedAttempts(changes, reason, fx);
    await this.judge.judgeEnded(changes, now, fx);
    await this.turn.settle(fx);
    return changes.rollouts.find((c) => c.after.rolloutId === rolloutId)?.after ?? (await this.turn.getRollout(rolloutId));
  }

  /** Unary pull: takes the head of the queue for `workerId` (undefined when empty). */
  async dequeueFor(workerId: string): Promise<{ rollout: Rollout; attempt: Attempt } | undefined> {
    const now = this.clock.now();
    const fx = new Effects();
    const asked = await this.store.changeWorker(workerId, undefined, (r) =>
      recordWorkRequest(r ?? newWorkerRecord(workerId, now), this.liveness, now),
    );
    this.turn.absorb(asked, now, fx);
    const labels = this.sessions.get(workerId)?.labels ?? asked.workers[0]?.after.worker.labels ?? {};
    const entry = this.drain.draining ? undefined : this.routing.pickFor(workerId, labels, now);
    let assigned: { rollout: Rollout; attempt: Attempt } | undefined;
    if (entry !== undefined) {
      this.routing.take(entry);
      try {
        const { claimed, changes } = await this.store.claimRollouts({
          now,
          liveness: this.liveness,
          workerId,
          epoch: undefined,
          rolloutIds: [entry.rolloutId],
          newAttemptId,
        });
        this.turn.absorb(changes, now, fx);
        assigned = claimed[0];
      } catch (error) {
        this.routing.putBack([entry]);
        if (!(error instanceof WorkerCordonedError)) throw error;
        await this.pump.learnCordon(workerId);
      }
    }
    await this.turn.settle(fx);
    return assigned;
  }

  /**
   * A runner's report. Only a current attempt moves its rollout; a report
   * about one that is no longer current is recorded on it and refused with
   * FAILED_PRECONDITION (after the record is durable). A report made on a
   * session that a newer one replaced changes nothing (ABORTED).
   * `returnsCredit`: the session gets one credit back with it, also when the
   * report is refused (a terminal update under Hello.terminal_update_returns_credit).
   */
  async report(
    attemptId: string,
    report: AttemptReport,
    guard: { workerId?: string; expectedVersion?: bigint; session?: SessionLink; returnsCredit?: boolean } = {},
  ): Promise<Attempt> {
    const now = this.clock.now();
    const credited = guard.returnsCredit === true ? guard.session : undefined;
    let outcome: Attempt | undefined;
    let refusal: DomainError | undefined;
    const step: AttemptStep = (attempt, rollout) => {
      if (guard.workerId !== undefined && attempt.workerId !== guard.workerId) {
        throw failedPrecondition(`attempt ${attemptId} belongs to worker ${attempt.workerId}, not ${guard.workerId}`);
      }
      if (guard.expectedVersion !== undefined && guard.expectedVersion !== attempt.version) {
        throw new DomainError(
          "aborted",
          `attempt ${attemptId} is at version ${attempt.version}, not the expected ${guard.expectedVersion}`,
        );
      }
      if (rollout !== undefined && isAttemptCurrent(attempt, rollout)) return (outcome = applyReport(attempt, report, now));
      if (isRepeatedOutcome(attempt, report)) return (outcome = attempt);
      refusal = failedPrecondition(
        `attempt ${attemptId} is no longer current (attempt ${AttemptStatus[attempt.status]}, rollout ${
          rollout === undefined ? "missing" : RolloutStatus[rollout.status]
        }); the report was recorded as late_status`,
      );
      return (outcome = recordLateReport(attempt, report, now));
    };
    const fx = new Effects();
    if (credited !== undefined && report.status === AttemptStatus.SUCCEEDED) {
      return this.reportAndRefill(attemptId, step, credited, now, fx, () => {
        if (refusal !== undefined) throw refusal;
        return outcome!;
      });
    }
    let changes: Changes;
    try {
      changes = await this.store.changeAttempt(attemptId, fenceOf(guard.session), step, this.turn.context(now));
    } catch (error) {
      if (credited !== undefined && error instanceof DomainError) {
        await this.runnerSessions.returnCredit(credited, now, fx);
        await this.pump.pump(now, fx);
        await this.turn.settle(fx);
      }
      throw error;
    }
    this.turn.absorb(changes, now, fx);
    await this.judge.judgeEnded(changes, now, fx);
    if (credited !== undefined) await this.runnerSessions.returnCredit(credited, now, fx);
    await this.pump.pump(now, fx);
    await this.turn.settle(fx);
    if (refusal !== undefined) throw refusal;
    return outcome!;
  }

  /**
   * A success that returns its credit: the report, the credit and the claim
   * of the rollout that takes the freed slot are asked for together, so they
   * share the store's turn (one transaction on PostgreSQL, the worker's row
   * written once) instead of the claim waiting for the report's turn. Only a
   * success: a failure's judgement (quarantine, a retry back in the queue)
   * must come before the next pick. Each part's changes are absorbed in the
   * order the store applied them: the report's, the credit's, the claim's.
   */
  private async reportAndRefill(
    attemptId: string,
    step: AttemptStep,
    credited: SessionLink,
    now: Millis,
    fx: Effects,
    answer: () => Attempt,
  ): Promise<Attempt> {
    // Absorbed as soon as it is applied, ahead of the claim's changes below (a reaction registered first runs first).
    const reported = this.store.changeAttempt(attemptId, fenceOf(credited), step, this.turn.context(now)).then((changes) => {
      this.turn.absorb(changes, now, fx);
      return changes;
    });
    const credit = this.runnerSessions.returnCredit(credited, now, fx);
    const refill = this.pump.pump(now, fx);
    // Both are waited for whatever happens to the report, so that neither's failure goes unheard.
    const beside = Promise.allSettled([credit, refill]).then(([a, b]) => {
      for (const result of [a, b]) if (result.status === "rejected") throw result.reason;
    });
    let changes: Changes;
    try {
      changes = await reported;
    } catch (error) {
      // Refused (the credit is returned all the same) or failed: the claim made beside it stands or fails on its own.
      await beside.catch(() => undefined);
      await this.turn.settle(fx);
      throw error;
    }
    await this.judge.judgeEnded(changes, now, fx);
    await beside;
    // Anything the judgement put back, or the claim left over, goes out now.
    await this.pump.pump(now, fx);
    await this.turn.settle(fx);
    return answer();
  }

  /**
   * Telemetry, plus a sign of life for each listed attempt the worker still
   * holds. A listed attempt that is no longer current gets a Cancel back, so
   * the runner stops spending its machine on it.
   */
  async heartbeat(workerId: string, data: HeartbeatData, attemptIds: readonly string[] = []): Promise<Worker> {
    const now = this.clock.now();
    const fx = new Effects();
    const changes = await this.store.changeWorker(workerId, undefined, (r) =>
      recordHeartbeat(r ?? newWorkerRecord(workerId, now), data, this.liveness, now),
    );
    this.turn.absorb(changes, now, fx);
    const worker = changes.workers[0]?.after.worker ?? (await this.turn.getWorker(workerId));
    this.onHeartbeat?.(workerId, data, now);
    for (const attemptId of attemptIds) {
      let stale = false;
      const signs = await this.store
        .changeAttempt(attemptId, undefined, (attempt, rollout) => {
          if (attempt.workerId !== workerId) return attempt;
          if (rollout !== undefined && isAttemptCurrent(attempt, rollout)) return recordSignOfLife(attempt, now);
          stale = true;
          return recordLateSignOfLife(attempt, now);
        }, this.turn.context(now))
        .catch((error: unknown) => {
          if (error instanceof DomainError && error.kind === "not_found") return NO_CHANGES;
          throw error;
        });
      this.turn.absorb(signs, now, fx);
      if (stale) this.turn.sendTo(workerId, cancelMessage(attemptId, "the attempt is no longer current on the server"), fx);
    }
    // No dispatch here: a sign of life can only take a rollout out of the queue (a revival), never put one in.
    await this.turn.settle(fx);
    return worker;
  }
}

/** Whether two requests of one enqueue name the same rollout id. */
function repeatsAnId(requests: readonly EnqueueRolloutRequest[]): boolean {
  const ids = new Set<string>();
  for (const { rolloutId } of requests) {
    if (rolloutId === "") continue;
    if (ids.has(rolloutId)) return true;
    ids.add(rolloutId);
  }
  return false;
}

/** Whether a repeated enqueue with the same idempotency key asks for the same rollout. */
function sameEnqueueRequest(existing: Rollout, request: EnqueueRolloutRequest): boolean {
  const asRequest = create(EnqueueRolloutRequestSchema, {
    input: existing.input,
    mode: existing.mode,
    resourcesId: existing.resourcesId,
    metadata: existing.metadata,
    config: existing.config,
    rolloutId: existing.rolloutId,
    priority: existing.priority,
  });
  const normalized = create(EnqueueRolloutRequestSchema, {
    ...request,
    metadata: request.metadata ?? {},
    config: request.config ?? existing.config,
  });
  return equals(EnqueueRolloutRequestSchema, asRequest, normalized);
}
