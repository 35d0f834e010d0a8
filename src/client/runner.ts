import { EventEmitter } from "node:events";
import { create, fromJson, toJson } from "@bufbuild/protobuf";
import type { JsonObject, JsonValue, MessageInitShape } from "@bufbuild/protobuf";
import { durationMs, timestampDate, timestampNow, ValueSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { resultBoundViolation } from "../common/attempt-result.js";
import { CLIENT_ID_PATTERN, CLIENT_ID_RULE } from "../common/client-id.js";
import { grpcServiceDefinition } from "../common/grpc-definition.js";
import { AttemptStatus } from "../gen/runnerline/v1/attempt_pb.js";
import {
  AttemptUpdateSchema,
  RunnerService,
  SessionRequestSchema,
} from "../gen/runnerline/v1/runner_pb.js";
import type {
  Assignment,
  AttemptUpdate,
  Drain,
  HeartbeatAck,
  Rejected,
  SessionReplaced,
  SessionRequest,
  SessionResponse,
  Welcome,
} from "../gen/runnerline/v1/runner_pb.js";
import type { SystemSnapshot } from "../gen/runnerline/v1/telemetry_pb.js";
import { AttemptCancelledError, RunnerRefusedError, SessionReplacedError, statusDetails } from "./runner-errors.js";
import { authMetadata } from "./security.js";
import { collectSystemSnapshot } from "./system-snapshot.js";
import type { RunnerEvents, RunnerHandler, RunnerJob, RunnerLogger, RunnerOptions, RunnerStatus } from "./runner-types.js";
import { workerIdFromHostname } from "./worker-id.js";

export { AttemptCancelledError, RunnerRefusedError, SessionReplacedError } from "./runner-errors.js";
export { workerIdFromHostname } from "./worker-id.js";

export type { RunnerEvents, RunnerHandler, RunnerJob, RunnerLogger, RunnerOptions, RunnerStatus } from "./runner-types.js";

/** Hello refusals that a reconnect would only repeat. */
const PERMANENT_HELLO_CODES: ReadonlySet<grpc.status> = new Set([
  grpc.status.INVALID_ARGUMENT,
  grpc.status.UNAUTHENTICATED,
  grpc.status.PERMISSION_DENIED,
]);

type SessionCall = grpc.ClientDuplexStream<SessionRequest, SessionResponse>;
interface RunnerServiceClient extends grpc.Client {
  session(metadata?: grpc.Metadata, options?: grpc.CallOptions): SessionCall;
}
const RunnerServiceClientConstructor = grpc.makeGenericClientConstructor(
  grpcServiceDefinition(RunnerService),
  "RunnerService",
) as unknown as new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ClientOptions,
) => RunnerServiceClient;

interface Session {
  call: SessionCall;
  welcomed: boolean;
  id: string;
  /** The server sent Drain: no new credits; close once nothing is held. */
  draining: boolean;
  /** We half-closed the request side. */
  closing: boolean;
  /**
   * Attempts whose SUCCEEDED or FAILED update returns their credit on this
   * session, so no Ready follows it: those assigned on it or resumed by its
   * Welcome, until reported. Stays empty unless Welcome confirmed
   * terminal_update_returns_credit (runner.proto, Hello).
   */
  creditReturning: Set<string>;
  /** Welcome confirmed terminal_update_returns_credit. */
  terminalUpdateReturnsCredit: boolean;
  /** The server said a newer session of this worker id replaced this one (SessionReplaced). */
  replacedBy: SessionReplaced | undefined;
}

interface HeldJob {
  job: RunnerJob;
  abort: AbortController;
  cancelled: boolean;
  finished: boolean;
}

interface SentUpdate {
  update: AttemptUpdate;
  /** Acknowledged once a HeartbeatAck with at least this sequence arrives. */
  confirmedBySequence: bigint;
}

const defaultHeartbeatIntervalMs = 5_000;
const closeGraceMs = 5_000;

/**
 * The runner SDK: one bidirectional Session stream to the server, kept alive
 * across disconnects, with heartbeats from a single timer and assignments
 * delivered as an async iterator.
 *
 * Results survive disconnects: an attempt's final update is kept until the
 * server acknowledges a heartbeat sent after it (the server handles a
 * session's messages in order), and is sent again after a reconnect if that
 * ack never came. The attempt is listed in Hello meanwhile, so the server keeps
 * it this runner's until the result arrives.
 */
export class Runner extends EventEmitter<RunnerEvents> {
  readonly workerId: string;
  readonly capacity: number;

  private readonly options: RunnerOptions;
  private readonly logger: RunnerLogger;
  private readonly collectSnapshot: () => Promise<SystemSnapshot>;
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;

  private state: RunnerStatus["state"] = "new";
  private client: RunnerServiceClient | undefined;
  private session: Session | undefined;
  private sessionLoop: Promise<void> | undefined;
  private wakeBackoff: (() => void) | undefined;

  /** Set once someone consumes assignments: only then does the runner grant credits. */
  private acceptingWork = false;
  private readonly held = new Map<string, HeldJob>();
  private readonly undelivered: RunnerJob[] = [];
  private unsentUpdates: AttemptUpdate[] = [];
  private unconfirmedUpdates: SentUpdate[] = [];

  private heartbeatIntervalMs = defaultHeartbeatIntervalMs;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private beating = false;
  private beatSoon = false;
  private nextSequence = 1n;
  private snapshotInFlight: Promise<void> | undefined;
  private freshSnapshot: SystemSnapshot | undefined;
  private lastAck: RunnerStatus["lastAck"];

  private readonly waiters = new Set<() => void>();
  /** Set when the runner stopped for good on the server's word; run() and assignments() reject with it. */
  private refusal: RunnerRefusedError | SessionReplacedError | undefined;

  constructor(options: RunnerOptions) {
    super();
    const capacity = options.capacity ?? 1;
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be a positive integer, got ${capacity}`);
    const workerId = options.workerId ?? workerIdFromHostname();
    if (!CLIENT_ID_PATTERN.test(workerId)) {
      throw new RangeError(`workerId must be ${CLIENT_ID_RULE}, got ${JSON.stringify(workerId)}`);
    }
    this.options = options;
    this.workerId = workerId;
    this.capacity = capacity;
    this.logger = options.logger ?? consoleLogger;
    this.collectSnapshot = options.collectSnapshot ?? (() => collectSystemSnapshot());
    this.initialDelayMs = options.reconnect?.initialDelayMs ?? 100;
    this.maxDelayMs = Math.max(options.reconnect?.maxDelayMs ?? 10_000, this.initialDelayMs);
  }

  get status(): RunnerStatus {
    return {
      state: this.state,
      connected: this.session?.welcomed ?? false,
      sessionId: this.session?.welcomed ? this.session.id : undefined,
      lastAck: this.lastAck,
      heldAttemptIds: [...this.held.keys()],
    };
  }

  /**
   * Opens the session (heartbeats only; no work is requested until
   * assignments() or run() is called). Idempotent; assignments() and run()
   * call it themselves.
   */
  start(): void {
    if (this.state !== "new") return;
    this.state = "running";
    this.client = new RunnerServiceClientConstructor(
      this.options.address,
      this.options.credentials ?? grpc.credentials.createInsecure(),
      {
        // A silently dead connection (lost host, NAT drop) would otherwise keep
        // buffering heartbeats; pings notice it within keepalive time + timeout.
        "grpc.keepalive_time_ms": 20_000,
        "grpc.keepalive_timeout_ms": 10_000,
        // grpc-js's own reconnect back-off (default up to 120 s) would
        // otherwise override ours: fail-fast calls fail at once while it waits.
        "grpc.initial_reconnect_backoff_ms": this.initialDelayMs,
        "grpc.max_reconnect_backoff_ms": this.maxDelayMs,
        "grpc.max_send_message_length": 16 * 1024 * 1024,
        "grpc.max_receive_message_length": 16 * 1024 * 1024,
        ...this.options.channelOptions,
      },
    );
    this.sessionLoop = this.maintainSession();
  }

  /** Assigned attempts, in arrival order. Ends when the runner stops. Meant for one consumer. */
  async *assignments(): AsyncGenerator<RunnerJob, void, undefined> {
    this.start();
    if (!this.acceptingWork) {
      this.acceptingWork = true;
      const session = this.session;
      if (session?.welcomed) this.grantCredits(session, this.capacity - this.held.size);
    }
    while (true) {
      await this.waitUntil(() => this.undelivered.length > 0 || this.state === "stopped");
      const job = this.undelivered.shift();
      if (!job) break;
      yield job;
    }
    if (this.refusal) throw this.refusal;
  }

  /**
   * Runs `handler` for every assignment, up to `capacity` at once (the server
   * never sends more than the credits granted). Reports RUNNING at start,
   * SUCCEEDED with the returned metadata, FAILED with the thrown error's
   * message. A cancelled job's slot is freed when its handler returns, so
   * handlers should honour job.signal. Resolves once the runner has stopped
   * and every handler has returned.
   */
  async run(handler: RunnerHandler): Promise<void> {
    const running = new Set<Promise<void>>();
    try {
      for await (const job of this.assignments()) {
        const execution = runJob(job, handler, this.logger).finally(() => running.delete(execution));
        running.add(execution);
      }
    } finally {
      await Promise.all(running);
    }
  }

  /**
   * Stops the runner. With drain: says Goodbye, takes no new work, waits for
   * held jobs to finish and for the server to acknowledge their results, then
   * closes the stream. Without: says Goodbye, reports every held job FAILED
   * ("the runner was stopped (reason)") so that the server retries its
   * rollout at once, aborts the jobs' signals, and closes the stream once the
   * server has processed that (at most abortReportTimeoutMs). Calling stop()
   * without drain during a drain escalates it.
   */
  async stop(options: { drain?: boolean; reason?: string } = {}): Promise<void> {
    const reason = options.reason ?? "runner stopping";
    if (this.state === "new") {
      this.state = "stopped";
      this.notify();
      return;
    }
    if (this.state !== "stopped" && options.drain) {
      if (this.state === "running") {
        this.state = "draining";
        const session = this.session;
        if (session?.welcomed) this.write(session, { case: "goodbye", value: { reason } });
      }
      await this.waitUntil(() => this.held.size === 0 || this.state === "stopped");
      // A heartbeat right away, so its ack confirms the last results without waiting a full interval.
      this.requestBeat();
      await this.waitUntil(
        () => (this.unsentUpdates.length === 0 && this.unconfirmedUpdates.length === 0) || this.state === "stopped",
      );
    }
    if (this.state !== "stopped") {
      const graceful = options.drain ?? false;
      const failed = graceful ? [] : this.failHeldJobs(reason);
      this.state = "stopped";
      for (const held of this.held.values()) held.abort.abort(new Error(reason));
      clearTimeout(this.heartbeatTimer);
      this.wakeBackoff?.();
      if (graceful) await this.closeSession();
      else await this.closeAfterReports(reason, failed);
      this.notify();
    }
    await this.sessionLoop;
    this.client?.close();
  }

  /**
   * Stopping without a drain: every job in hand ends FAILED now (Goodbye
   * first, so that the credits those reports return bring no new work). The
   * handlers' own outcomes, when they come, are ignored. Returns their ids.
   */
  private failHeldJobs(reason: string): string[] {
    const session = this.session;
    // A draining runner said Goodbye already (on this session, or in its Welcome handling).
    if (session?.welcomed && this.state === "running") this.write(session, { case: "goodbye", value: { reason } });
    const failed: string[] = [];
    for (const [attemptId, held] of this.held) {
      // A cancelled job's attempt has ended on the server already.
      if (held.cancelled) continue;
      held.finished = true;
      this.held.delete(attemptId);
      held.abort.abort(new Error(reason));
      this.sendUpdate(update(attemptId, AttemptStatus.FAILED, `the runner was stopped (${reason})`, undefined));
      failed.push(attemptId);
    }
    // Jobs never handed to a handler have nothing left to run.
    this.undelivered.length = 0;
    return failed;
  }

  /**
   * Half-closes the session and waits (at most abortReportTimeoutMs) for the
   * server to end it cleanly, which it does once it has processed every
   * message before: the reports reached it. Says so in one line.
   */
  private async closeAfterReports(reason: string, failed: string[]): Promise<void> {
    const session = this.session;
    const timeoutMs = this.options.abortReportTimeoutMs ?? 2_000;
    let outcome: string;
    if (session?.welcomed && !session.closing) {
      let status: grpc.StatusObject | undefined;
      const ended = new Promise<void>((resolve) =>
        session.call.once("status", (received: grpc.StatusObject) => {
          status = received;
          resolve();
        }),
      );
      this.halfClose(session);
      await settlesWithin(ended, timeoutMs);
      if (status === undefined) session.call.cancel();
      outcome =
        status?.code === grpc.status.OK
          ? "the server confirmed the report"
          : status === undefined
            ? `the report was NOT confirmed within ${timeoutMs} ms`
            : `the report was NOT confirmed (${grpc.status[status.code]}: ${statusDetails(status.details)})`;
    } else {
      session?.call.cancel();
      outcome = "the report did NOT reach the server (no session open)";
    }
    if (failed.length === 0) {
      this.logger.info(`runner ${this.workerId}: stopped without draining (${reason})`);
      return;
    }
    const confirmed = outcome.startsWith("the server confirmed");
    this.logger[confirmed ? "info" : "warn"](
      `runner ${this.workerId}: stopped without draining (${reason}); reported ${failed.join(", ")} as FAILED: ${outcome}` +
        (confirmed ? "" : "; the server ends them when they go UNRESPONSIVE"),
    );
  }

  /** After a drain: half-closes, and cancels the stream if the server does not end it within closeGraceMs. */
  private async closeSession(): Promise<void> {
    const session = this.session;
    if (!session) return;
    this.halfClose(session);
    const ended = new Promise<void>((resolve) => session.call.once("status", () => resolve()));
    if (!(await settlesWithin(ended, closeGraceMs))) session.call.cancel();
  }

  private async maintainSession(): Promise<void> {
    let failures = 0;
    while (this.state !== "stopped") {
      const { welcomed, drained, failure, replacedBy } = await this.runSession();
      if (this.hasStopped()) break;
      if (!welcomed && failure !== undefined && PERMANENT_HELLO_CODES.has(failure.code)) {
        this.refuse(new RunnerRefusedError(failure.code, failure.details));
        break;
      }
      // Only our current session hears it (onResponse ignores older ones): another process holds our worker id now.
      if (replacedBy !== undefined) {
        this.refuse(new SessionReplacedError(this.workerId, replacedBy.newSessionId, replacedBy.newPeer));
        break;
      }
      // A server that asked us to drain is going away: back off as from a failure, not hammer it with reconnects.
      failures = welcomed && !drained ? 0 : failures + 1;
      const delayMs = this.backoffDelay(failures);
      this.logger.debug(`runner ${this.workerId}: reconnecting in ${delayMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delayMs);
        this.wakeBackoff = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wakeBackoff = undefined;
    }
  }

  /** Hello was refused for good, or the worker id is taken: stop without reconnecting; run() rejects with the refusal. */
  private refuse(refusal: RunnerRefusedError | SessionReplacedError): void {
    this.logger.error(`runner ${this.workerId}: ${refusal.message}; not retrying`);
    this.refusal = refusal;
    this.state = "stopped";
    for (const held of this.held.values()) held.abort.abort(refusal);
    clearTimeout(this.heartbeatTimer);
    this.client?.close();
    this.notify();
  }

  /** A method, so the compiler does not narrow the state across awaits. */
  private hasStopped(): boolean {
    return this.state === "stopped";
  }

  /** Full delay doubles per failed try up to maxDelayMs; the wait is a random point in its upper half. */
  private backoffDelay(failures: number): number {
    const ceiling = Math.min(this.maxDelayMs, this.initialDelayMs * 2 ** Math.min(failures, 30));
    return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
  }

  /** One session from Hello to the end of the stream; resolves whether it was welcomed, and how it failed. */
  private runSession(): Promise<{
    welcomed: boolean;
    drained: boolean;
    failure: grpc.ServiceError | undefined;
    replacedBy: SessionReplaced | undefined;
  }> {
    return new Promise((resolve) => {
      const client = this.client!;
      const call = client.session(authMetadata(this.options.token) ?? new grpc.Metadata());
      const session: Session = {
        call,
        welcomed: false,
        id: "",
        draining: false,
        closing: false,
        creditReturning: new Set(),
        terminalUpdateReturnsCredit: false,
        replacedBy: undefined,
      };
      this.session = session;
      let failure: grpc.ServiceError | undefined;

      const welcomeTimer = setTimeout(() => {
        this.logger.warn(`runner ${this.workerId}: no Welcome within ${this.welcomeTimeoutMs} ms, retrying`);
        call.cancel();
      }, this.welcomeTimeoutMs);

      call.on("data", (response: SessionResponse) => {
        if (response.message.case === "welcome") clearTimeout(welcomeTimer);
        this.onResponse(session, response);
      });
      call.on("error", (error: grpc.ServiceError) => {
        failure = error;
      });
      call.on("status", () => {
        clearTimeout(welcomeTimer);
        this.onSessionEnded(session, failure);
        resolve({ welcomed: session.welcomed, drained: session.draining, failure, replacedBy: session.replacedBy });
      });

      this.write(session, {
        case: "hello",
        value: {
          workerId: this.workerId,
          labels: this.options.labels ?? {},
          capacity: this.capacity,
          clientVersion: this.options.clientVersion ?? "",
          runningAttemptIds: this.attemptsToResume(),
          // Fewer messages per attempt where the server agrees (Welcome says which); an older server ignores both.
          terminalUpdateReturnsCredit: true,
          acceptsAssignmentBatches: true,
        },
      });
    });
  }

  private get welcomeTimeoutMs(): number {
    return this.options.welcomeTimeoutMs ?? 10_000;
  }

  /** Attempts still executing plus those whose result the server has not acknowledged yet. */
  private attemptsToResume(): string[] {
    const ids = new Set(this.held.keys());
    for (const { attemptId } of this.unsentUpdates) ids.add(attemptId);
    for (const { update } of this.unconfirmedUpdates) ids.add(update.attemptId);
    return [...ids];
  }

  private onSessionEnded(session: Session, failure: grpc.ServiceError | undefined): void {
    if (this.session === session) this.session = undefined;
    // Without an ack we cannot know whether the server saw these; send them again.
    this.unsentUpdates = [...this.unconfirmedUpdates.map((sent) => sent.update), ...this.unsentUpdates];
    this.unconfirmedUpdates = [];
    if (session.welcomed) {
      const why = failure ? `${grpc.status[failure.code]}: ${statusDetails(failure.details)}` : "closed";
      const level = failure && this.state !== "stopped" ? "warn" : "info";
      this.logger[level](`runner ${this.workerId}: session ${session.id} ended (${why})`);
    } else if (this.state !== "stopped") {
      const why = failure ? statusDetails(failure.details) : "stream ended before Welcome";
      this.logger.warn(`runner ${this.workerId}: could not open a session: ${why}`);
    }
    this.emit("disconnected", failure);
    this.notify();
  }

  private onResponse(session: Session, response: SessionResponse): void {
    if (this.session !== session) return;
    const message = response.message;
    switch (message.case) {
      case "welcome":
        return this.onWelcome(session, message.value);
      case "assignment":
        return this.onAssignment(session, message.value);
      case "assignmentBatch":
        for (const assignment of message.value.assignments) this.onAssignment(session, assignment);
        return;
      case "cancel":
        return this.onCancel(message.value.attemptId, message.value.reason);
      case "rejected":
        return this.onRejected(message.value);
      case "drain":
        return this.onDrain(session, message.value);
      case "heartbeatAck":
        return this.onHeartbeatAck(message.value);
      case "sessionReplaced":
        // The stream ends with ABORTED next; maintainSession stops the runner then.
        session.replacedBy = message.value;
        return;
      case undefined:
        return;
    }
  }

  private onWelcome(session: Session, welcome: Welcome): void {
    session.welcomed = true;
    session.id = welcome.sessionId;
    if (welcome.heartbeatInterval) {
      const interval = durationMs(welcome.heartbeatInterval);
      if (interval > 0) this.heartbeatIntervalMs = interval;
    }
    this.logger.info(
      `runner ${this.workerId}: session ${session.id} started` +
        (welcome.resumedAttemptIds.length ? ` (resumed ${welcome.resumedAttemptIds.join(", ")})` : ""),
    );
    session.terminalUpdateReturnsCredit = welcome.terminalUpdateReturnsCredit;
    if (session.terminalUpdateReturnsCredit) for (const attemptId of welcome.resumedAttemptIds) session.creditReturning.add(attemptId);
    const unsent = this.unsentUpdates;
    this.unsentUpdates = [];
    // Results of resumed attempts that finished while disconnected return their credits as they are sent.
    let creditsReturned = 0;
    for (const update of unsent) if (this.sendUpdate(update)) creditsReturned++;
    if (this.state === "draining") {
      this.write(session, { case: "goodbye", value: { reason: "runner stopping" } });
    } else {
      this.grantCredits(session, this.capacity - this.held.size - creditsReturned);
    }
    this.requestBeat();
    this.emit("connected", welcome);
    this.notify();
  }

  private onAssignment(session: Session, { rollout, attempt }: Assignment): void {
    if (!rollout || !attempt) {
      this.logger.warn(`runner ${this.workerId}: ignoring an assignment without rollout or attempt`);
      return;
    }
    const attemptId = attempt.attemptId;
    if (this.held.has(attemptId)) {
      this.logger.warn(`runner ${this.workerId}: attempt ${attemptId} assigned twice; keeping the first`);
      return;
    }
    if (session.terminalUpdateReturnsCredit) session.creditReturning.add(attemptId);
    const abort = new AbortController();
    const held: HeldJob = {
      abort,
      cancelled: false,
      finished: false,
      job: {
        input: rollout.input === undefined ? null : toJson(ValueSchema, rollout.input),
        rollout,
        attempt,
        signal: abort.signal,
        reportRunning: (metadata) => {
          if (held.finished || held.cancelled) return;
          this.sendUpdate(update(attemptId, AttemptStatus.RUNNING, "", metadata));
        },
        succeed: (result, metadata) => this.finishJob(held, this.successUpdate(attemptId, result, metadata)),
        fail: (errorMessage, metadata) =>
          this.finishJob(held, update(attemptId, AttemptStatus.FAILED, errorMessage, metadata)),
      },
    };
    this.held.set(attemptId, held);
    this.undelivered.push(held.job);
    this.emit("assignment", held.job);
    this.notify();
  }

  /** SUCCEEDED with the result, or FAILED with the reason the server would refuse it for. */
  private successUpdate(attemptId: string, result: JsonValue | undefined, metadata: JsonObject | undefined): AttemptUpdate {
    const violation = result === undefined ? undefined : resultBoundViolation(result);
    if (violation !== undefined) {
      this.logger.warn(`runner ${this.workerId}: attempt ${attemptId}: ${violation.message}; reporting FAILED`);
      return update(attemptId, AttemptStatus.FAILED, violation.message, metadata);
    }
    const attemptUpdate = update(attemptId, AttemptStatus.SUCCEEDED, "", metadata);
    if (result !== undefined) attemptUpdate.result = fromJson(ValueSchema, result);
    return attemptUpdate;
  }

  private finishJob(held: HeldJob, result: AttemptUpdate): void {
    if (held.finished) {
      this.logger.debug(`runner ${this.workerId}: attempt ${result.attemptId} already finished; ignoring`);
      return;
    }
    held.finished = true;
    this.held.delete(result.attemptId);
    // The server already ended a cancelled attempt; a result would only be rejected.
    const creditReturned = !held.cancelled && this.state !== "stopped" && this.sendUpdate(result);
    const session = this.session;
    if (session?.welcomed) {
      if (!creditReturned) this.grantCredits(session, 1);
      if (session.draining) this.closeIfDrained(session);
    }
    this.notify();
  }

  private onCancel(attemptId: string, reason: string): void {
    const held = this.held.get(attemptId);
    if (!held || held.cancelled) {
      this.logger.debug(`runner ${this.workerId}: cancel for attempt ${attemptId}, which is not running here`);
      return;
    }
    held.cancelled = true;
    // Never handed out: nobody would ever finish it, so it ends here.
    const index = this.undelivered.indexOf(held.job);
    if (index >= 0) this.undelivered.splice(index, 1);
    held.abort.abort(new AttemptCancelledError(attemptId, reason));
    this.emit("cancelled", attemptId, reason);
    if (index >= 0) this.finishJob(held, update(attemptId, AttemptStatus.UNSPECIFIED, "", undefined));
  }

  private onRejected(rejected: Rejected): void {
    if (rejected.requestKind === "attempt_update" && rejected.attemptId) {
      // Rejected means processed: resending it after a reconnect would be rejected again.
      this.unconfirmedUpdates = this.unconfirmedUpdates.filter((sent) => sent.update.attemptId !== rejected.attemptId);
    }
    if (this.listenerCount("rejected") === 0) {
      this.logger.warn(
        `runner ${this.workerId}: server rejected ${rejected.requestKind || "a message"}` +
          (rejected.attemptId ? ` for attempt ${rejected.attemptId}` : "") +
          ` (${grpc.status[rejected.code] ?? rejected.code}): ${rejected.message}`,
      );
    }
    this.emit("rejected", rejected);
    this.notify();
  }

  private onDrain(session: Session, drain: Drain): void {
    this.logger.info(`runner ${this.workerId}: server asked to drain${drain.reason ? ` (${drain.reason})` : ""}`);
    session.draining = true;
    this.emit("drain", drain);
    // An operator drained this worker (WorkerService.DrainWorker): finish, report, say Goodbye, and run() returns.
    if (drain.exit) void this.stop({ drain: true, reason: drain.reason || "drained by an operator" });
    else this.closeIfDrained(session);
  }

  private closeIfDrained(session: Session): void {
    if (this.held.size > 0 || session.closing) return;
    this.halfClose(session);
    // A server that keeps the stream open after we are done must not pin us to it.
    const timer = setTimeout(() => {
      if (this.session === session) session.call.cancel();
    }, closeGraceMs);
    session.call.once("status", () => clearTimeout(timer));
  }

  private halfClose(session: Session): void {
    if (session.closing) return;
    session.closing = true;
    session.call.end();
  }

  private onHeartbeatAck(ack: HeartbeatAck): void {
    this.lastAck = {
      sequence: ack.sequence,
      serverTime: ack.serverTime ? timestampDate(ack.serverTime) : undefined,
      receivedAt: new Date(),
    };
    this.unconfirmedUpdates = this.unconfirmedUpdates.filter((sent) => sent.confirmedBySequence > ack.sequence);
    this.emit("heartbeatAck", ack);
    this.notify();
  }

  private grantCredits(session: Session, slots: number): void {
    if (slots <= 0 || !this.acceptingWork || this.state !== "running" || session.draining || session.closing) return;
    this.write(session, { case: "ready", value: { slots } });
  }

  /**
   * Writes an update on the session, or keeps it for the next one. True when
   * it returned its attempt's credit to the server, which then needs no Ready
   * for that slot.
   */
  private sendUpdate(attemptUpdate: AttemptUpdate): boolean {
    const session = this.session;
    if (!session?.welcomed || session.closing) {
      this.unsentUpdates.push(attemptUpdate);
      return false;
    }
    this.write(session, { case: "attemptUpdate", value: attemptUpdate });
    if (!isFinal(attemptUpdate.status)) return false;
    this.unconfirmedUpdates.push({ update: attemptUpdate, confirmedBySequence: this.nextSequence });
    return session.creditReturning.delete(attemptUpdate.attemptId);
  }

  private write(session: Session, message: MessageInitShape<typeof SessionRequestSchema>["message"]): void {
    if (session.closing) return;
    session.call.write(create(SessionRequestSchema, { message }));
  }

  private requestBeat(): void {
    this.beatSoon = true;
    if (!this.beating) this.scheduleBeat(0);
  }

  private scheduleBeat(delayMs: number): void {
    clearTimeout(this.heartbeatTimer);
    if (this.state === "stopped") return;
    this.heartbeatTimer = setTimeout(() => void this.beat(), delayMs);
  }

  /**
   * The heartbeat loop: each beat schedules the next, so beats never overlap,
   * and a slow snapshot delays at most its own beat.
   */
  private async beat(): Promise<void> {
    if (this.beating) return;
    this.beating = true;
    this.beatSoon = false;
    try {
      if (!this.session?.welcomed) return;
      const snapshot = await this.takeSnapshot(Math.min(this.heartbeatIntervalMs / 2, 3_000));
      const session = this.session;
      if (this.state === "stopped" || !session?.welcomed || session.closing) return;
      this.write(session, {
        case: "heartbeat",
        value: {
          snapshot,
          extraStats: this.readExtraStats(),
          attemptIds: [...this.held.keys()],
          sequence: this.nextSequence++,
        },
      });
    } finally {
      this.beating = false;
      if (this.state !== "stopped" && this.session?.welcomed) {
        this.scheduleBeat(this.beatSoon ? 0 : jitter(this.heartbeatIntervalMs, 0.1));
      }
    }
  }

  /**
   * Waits up to `waitMs` for a snapshot. A collection still running from an
   * earlier beat is awaited, never duplicated; if it finishes late its result
   * goes out with the next beat.
   */
  private async takeSnapshot(waitMs: number): Promise<SystemSnapshot | undefined> {
    this.snapshotInFlight ??= this.collectSnapshot()
      .then(
        (snapshot) => {
          this.freshSnapshot = snapshot;
        },
        (error: unknown) => {
          this.logger.warn(`runner ${this.workerId}: snapshot collection failed: ${describe(error)}`);
        },
      )
      .finally(() => {
        this.snapshotInFlight = undefined;
      });
    await settlesWithin(this.snapshotInFlight, waitMs);
    const snapshot = this.freshSnapshot;
    this.freshSnapshot = undefined;
    return snapshot;
  }

  private readExtraStats(): JsonObject | undefined {
    try {
      return this.options.extraStats?.();
    } catch (error) {
      this.logger.warn(`runner ${this.workerId}: extraStats failed: ${describe(error)}`);
      return undefined;
    }
  }

  private waitUntil(condition: () => boolean): Promise<void> {
    if (condition()) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (!condition()) return;
        this.waiters.delete(check);
        resolve();
      };
      this.waiters.add(check);
    });
  }

  /** Re-checks every waitUntil condition; called after each state change. */
  private notify(): void {
    for (const check of [...this.waiters]) check();
  }
}

async function runJob(job: RunnerJob, handler: RunnerHandler, logger: RunnerLogger): Promise<void> {
  if (job.signal.aborted) {
    job.fail(describe(job.signal.reason));
    return;
  }
  job.reportRunning();
  try {
    // null is a result; only undefined (or no return) means none.
    const result = (await handler(job)) as JsonValue | undefined;
    job.succeed(result);
  } catch (error) {
    logger.debug(`attempt ${job.attempt.attemptId} failed: ${describe(error)}`);
    job.fail(describe(error));
  }
}

function update(attemptId: string, status: AttemptStatus, errorMessage: string, metadata: JsonObject | undefined): AttemptUpdate {
  // An outcome carries when it happened: it may reach the server late, resent after a reconnect.
  const finishTime = isFinal(status) ? timestampNow() : undefined;
  return create(AttemptUpdateSchema, { attemptId, status, errorMessage, metadata, finishTime });
}

function isFinal(status: AttemptStatus): boolean {
  return status === AttemptStatus.SUCCEEDED || status === AttemptStatus.FAILED;
}

function jitter(value: number, fraction: number): number {
  return Math.max(1, Math.round(value * (1 - fraction + Math.random() * 2 * fraction)));
}

/** Whether `work` settles within `ms`; the timer is cleared either way so it never holds the process open. */
async function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([work.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

const consoleLogger: RunnerLogger = {
  debug: () => {},
  info: (message) => console.error(message),
  warn: (message) => console.error(message),
  error: (message) => console.error(message),
};
