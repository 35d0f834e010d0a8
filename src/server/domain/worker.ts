import { create, type JsonObject } from "@bufbuild/protobuf";
import type { Attempt } from "../../gen/runnerline/v1/attempt_pb.js";
import type { SystemSnapshot } from "../../gen/runnerline/v1/telemetry_pb.js";
import { type Worker, WorkerSchema, WorkerStatus } from "../../gen/runnerline/v1/worker_pb.js";
import { type Millis, msOf, toTimestamp } from "./time.js";
import { drainEnded } from "./cordon.js";
import { fullShape } from "./full-shape.js";

/**
 * How the worker is attached to the server:
 * - "none": it never held a runner session (a unary-only client) — vouched for
 *   by recent calls;
 * - "open": it holds a session now — vouched for by its heartbeats;
 * - "lost": its session ended without Goodbye;
 * - "left": it said Goodbye and its session ended.
 */
export type Attachment = "none" | "open" | "lost" | "left";

/**
 * A worker as stored: the public message plus the facts its status is derived
 * from that the message does not show.
 */
export interface WorkerRecord {
  worker: Worker;
  attachment: Attachment;
  /** One of its attempts was just lost (TIMEOUT / UNRESPONSIVE) and it has not asked for work since. */
  suspect: boolean;
  /**
   * Raised by every Hello: the fence of the session that holds the worker now.
   * Writes made for an older session (a lower epoch) change nothing.
   */
  epoch: number;
}

/** Liveness settings that status derivation depends on. */
export interface Liveness {
  /** Heartbeats later than this make an attached worker UNKNOWN; unary-only workers must call this often. */
  heartbeatGraceMs: Millis;
}

export function newWorkerRecord(workerId: string, now: Millis): WorkerRecord {
  const worker = fullShape(
    WorkerSchema,
    create(WorkerSchema, {
      workerId,
      status: WorkerStatus.UNKNOWN,
      capacity: 1,
      createTime: toTimestamp(now),
      version: 1n,
    }),
  );
  return { worker, attachment: "none", suspect: false, epoch: 0 };
}

/**
 * A worker's status, from facts alone (DESIGN §3): the order in which events
 * arrived does not matter, only what is true now.
 */
export function deriveWorkerStatus(record: WorkerRecord, liveness: Liveness, now: Millis): WorkerStatus {
  const { worker, attachment } = record;
  if (attachment === "lost") return WorkerStatus.UNKNOWN;
  if (attachment === "open" && heartbeatLate(worker, liveness, now)) return WorkerStatus.UNKNOWN;
  const holdsWork = worker.currentAttemptIds.length > 0;
  if (attachment === "left") return holdsWork ? WorkerStatus.UNKNOWN : WorkerStatus.OFFLINE;
  if (holdsWork) return WorkerStatus.BUSY;
  if (record.suspect) return WorkerStatus.UNKNOWN;
  if (attachment === "open") return WorkerStatus.IDLE;
  // Unary-only: idle while it keeps asking for work, unknown before it ever has.
  const askedAt = msOf(worker.lastDequeueTime);
  if (askedAt === undefined) return WorkerStatus.UNKNOWN;
  const lastCall = Math.max(askedAt, msOf(worker.lastHeartbeatTime) ?? 0);
  return now - lastCall > liveness.heartbeatGraceMs ? WorkerStatus.UNKNOWN : WorkerStatus.IDLE;
}

function heartbeatLate(worker: Worker, liveness: Liveness, now: Millis): boolean {
  const last = Math.max(msOf(worker.lastHeartbeatTime) ?? 0, msOf(worker.connectTime) ?? 0);
  return now - last > liveness.heartbeatGraceMs;
}

/**
 * Re-derives the status after any change of facts and stamps the moments it
 * turned BUSY or IDLE. Every worker transition ends here, so the stored status
 * is never out of step with the facts.
 */
export function settle(record: WorkerRecord, liveness: Liveness, now: Millis, changed = false): WorkerRecord {
  const status = deriveWorkerStatus(record, liveness, now);
  if (status === record.worker.status && !changed) return record;
  return withStatus({ ...record, worker: { ...record.worker } }, status, now);
}

/**
 * settle() on a record this module has just copied (record and worker), which
 * no one else holds yet: its status fields are set in place, saving a second
 * copy of the whole message on the dispatch path (holdAttempt, releaseAttempt).
 */
function settleCopy(copy: WorkerRecord, liveness: Liveness, now: Millis): WorkerRecord {
  return withStatus(copy, deriveWorkerStatus(copy, liveness, now), now);
}

/** Sets a copied record's status and what follows from it (the times it turned busy or idle, its version). */
function withStatus(copy: WorkerRecord, status: WorkerStatus, now: Millis): WorkerRecord {
  const worker = copy.worker;
  if (status !== worker.status) {
    if (status === WorkerStatus.BUSY) worker.lastBusyTime = toTimestamp(now);
    if (status === WorkerStatus.IDLE) worker.lastIdleTime = toTimestamp(now);
    // A reason the server gave for the status (a forgotten worker's) lasts until the status changes.
    if (status !== WorkerStatus.OFFLINE) worker.statusReason = "";
    worker.status = status;
  }
  worker.version = worker.version + 1n;
  return copy;
}

export interface SessionOpening {
  labels: Record<string, string>;
  capacity: number;
  clientVersion: string;
  peer: string;
}

export function attachSession(record: WorkerRecord, opening: SessionOpening, liveness: Liveness, now: Millis) {
  return settle(
    {
      attachment: "open",
      suspect: false,
      epoch: record.epoch + 1,
      worker: {
        ...record.worker,
        connected: true,
        labels: opening.labels,
        capacity: opening.capacity,
        clientVersion: opening.clientVersion,
        peer: opening.peer,
        connectTime: toTimestamp(now),
        disconnectTime: undefined,
      },
    },
    liveness,
    now,
    true,
  );
}

/**
 * The session ended: cleanly after Goodbye, or lost. `endedAt` is when it
 * ended, when that was before now (a session that died with the previous
 * server process ended when the worker was last heard from).
 */
export function detachSession(record: WorkerRecord, clean: boolean, liveness: Liveness, now: Millis, endedAt = now) {
  // A drained runner that leaves has done what the drain asked; a lost one hears it again when it reconnects.
  const left = clean ? drainEnded(record) : record;
  return settle(
    {
      ...left,
      attachment: clean ? "left" : "lost",
      worker: { ...left.worker, connected: false, disconnectTime: toTimestamp(endedAt) },
    },
    liveness,
    now,
    true,
  );
}

export interface HeartbeatData {
  snapshot?: SystemSnapshot;
  extraStats?: JsonObject;
}

/** Telemetry only: never sets the status itself (it may end a lateness). */
export function recordHeartbeat(record: WorkerRecord, data: HeartbeatData, liveness: Liveness, now: Millis) {
  const worker = record.worker;
  return settle(
    {
      ...record,
      worker: {
        ...worker,
        lastHeartbeatTime: toTimestamp(Math.max(now, msOf(worker.lastHeartbeatTime) ?? 0)),
        snapshot: data.snapshot ?? worker.snapshot,
        extraStats: data.extraStats ?? worker.extraStats,
      },
    },
    liveness,
    now,
  );
}

/** It asked for work (Ready on its session, or a unary dequeue). */
export function recordWorkRequest(record: WorkerRecord, liveness: Liveness, now: Millis) {
  return settle(
    {
      worker: { ...record.worker, lastDequeueTime: toTimestamp(now) },
      attachment: record.attachment === "open" ? "open" : "none",
      suspect: false,
      epoch: record.epoch,
    },
    liveness,
    now,
  );
}

/** The worker now holds the attempt (it claimed it); holding one it holds already changes nothing. */
export function holdAttempt(record: WorkerRecord, attempt: Attempt, liveness: Liveness, now: Millis) {
  return holdAttempts(record, [attempt], liveness, now);
}

/** holdAttempt for several attempts at once (a claim of a few rollouts): one copy of the record, not one each. */
export function holdAttempts(record: WorkerRecord, attempts: readonly Attempt[], liveness: Liveness, now: Millis) {
  const worker = record.worker;
  const added = attempts.filter(
    (attempt, i) =>
      !worker.currentAttemptIds.includes(attempt.attemptId) && attempts.findIndex((a) => a.attemptId === attempt.attemptId) === i,
  );
  if (added.length === 0) return record;
  return settleCopy(
    {
      ...record,
      worker: {
        ...worker,
        currentAttemptIds: [...worker.currentAttemptIds, ...added.map((attempt) => attempt.attemptId)],
        currentRolloutIds: [...worker.currentRolloutIds, ...added.map((attempt) => attempt.rolloutId)],
      },
    },
    liveness,
    now,
  );
}

/**
 * The attempt is no longer active. `lost` (TIMEOUT / UNRESPONSIVE) leaves the
 * worker UNKNOWN until it shows it is healthy by asking for work again.
 */
export function releaseAttempt(
  record: WorkerRecord,
  attempt: Attempt,
  lost: boolean,
  liveness: Liveness,
  now: Millis,
) {
  const worker = record.worker;
  const index = worker.currentAttemptIds.indexOf(attempt.attemptId);
  if (index < 0) return record;
  return settleCopy(
    {
      ...record,
      suspect: record.suspect || lost,
      worker: {
        ...worker,
        currentAttemptIds: worker.currentAttemptIds.filter((_, i) => i !== index),
        currentRolloutIds: worker.currentRolloutIds.filter((_, i) => i !== index),
      },
    },
    liveness,
    now,
  );
}

/**
 * After a restart: the worker holds exactly these active attempts. Its stored
 * list may lag behind them (a store may write it behind, since this rebuilds it).
 */
export function holdExactly(record: WorkerRecord, attempts: readonly Attempt[], liveness: Liveness, now: Millis): WorkerRecord {
  const held = record.worker.currentAttemptIds;
  if (held.length === attempts.length && attempts.every((attempt, i) => held[i] === attempt.attemptId)) return record;
  return settle(
    {
      ...record,
      worker: {
        ...record.worker,
        currentAttemptIds: attempts.map((attempt) => attempt.attemptId),
        currentRolloutIds: attempts.map((attempt) => attempt.rolloutId),
      },
    },
    liveness,
    now,
    true,
  );
}

/** The last moment the server heard from the worker in any way (undefined if never). */
export function lastHeardMs(worker: Worker): Millis | undefined {
  const times = [worker.lastHeartbeatTime, worker.lastDequeueTime, worker.connectTime].map(msOf);
  const known = times.filter((t): t is Millis => t !== undefined);
  return known.length === 0 ? undefined : Math.max(...known);
}

/**
 * The first moment deriveWorkerStatus could turn this worker UNKNOWN through
 * lateness alone (undefined when time alone cannot change its status). A
 * timer set for it may fire early (the worker was heard from since), never
 * late.
 */
export function latenessDue(record: WorkerRecord, liveness: Liveness): Millis | undefined {
  const { worker, attachment } = record;
  if (worker.status !== WorkerStatus.IDLE && worker.status !== WorkerStatus.BUSY) return undefined;
  if (attachment === "open") {
    return Math.max(msOf(worker.lastHeartbeatTime) ?? 0, msOf(worker.connectTime) ?? 0) + liveness.heartbeatGraceMs + 1;
  }
  if (attachment !== "none") return undefined;
  const askedAt = msOf(worker.lastDequeueTime);
  if (askedAt === undefined) return undefined;
  return Math.max(askedAt, msOf(worker.lastHeartbeatTime) ?? 0) + liveness.heartbeatGraceMs + 1;
}

/** Whether the worker may be given new work at `now` as far as quarantine goes. */
export function isQuarantined(worker: Worker, now: Millis): boolean {
  const until = msOf(worker.quarantineUntil);
  return until !== undefined && now < until;
}

/** It gets no new work until `until`; the count says how many quarantines in a row this is. */
export function quarantineWorker(record: WorkerRecord, until: Millis, reason: string, count: number): WorkerRecord {
  return {
    ...record,
    worker: {
      ...record.worker,
      quarantineUntil: toTimestamp(until),
      quarantineReason: reason,
      quarantineCount: count,
      version: record.worker.version + 1n,
    },
  };
}

/** Quarantine (and probation) over: a success after the period, or an operator's ReleaseWorker. */
export function clearQuarantine(record: WorkerRecord): WorkerRecord {
  const worker = record.worker;
  if (worker.quarantineUntil === undefined && worker.quarantineCount === 0 && worker.quarantineReason === "") return record;
  return {
    ...record,
    worker: {
      ...worker,
      quarantineUntil: undefined,
      quarantineReason: "",
      quarantineCount: 0,
      version: worker.version + 1n,
    },
  };
}
