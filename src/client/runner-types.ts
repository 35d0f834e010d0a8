// The runner SDK's public types (runner.ts is the Runner itself): its options, a job as the handler sees it, the
// status it reports and the events it emits.
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import type { Attempt } from "../gen/runnerline/v1/attempt_pb.js";
import type { Rollout } from "../gen/runnerline/v1/rollout_pb.js";
import type { Drain, HeartbeatAck, Rejected, Welcome } from "../gen/runnerline/v1/runner_pb.js";
import type { SystemSnapshot } from "../gen/runnerline/v1/telemetry_pb.js";

export interface RunnerLogger {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export interface RunnerOptions {
  /** Server's gRPC address, e.g. "127.0.0.1:50051". */
  address: string;
  /**
   * This runner's identity, unique in the fleet. Default: the host name
   * (workerIdFromHostname). A second runner with the same id replaces this
   * one's session, and run() then rejects with SessionReplacedError.
   */
  workerId?: string;
  labels?: Record<string, string>;
  /** How many attempts run at once. Default 1. */
  capacity?: number;
  clientVersion?: string;
  /** Host telemetry for each heartbeat. Default: collectSystemSnapshot. */
  collectSnapshot?: () => Promise<SystemSnapshot>;
  /** Custom numbers for each heartbeat (at most 64 KiB encoded). */
  extraStats?: () => JsonObject | undefined;
  /** Jittered exponential back-off between session attempts. */
  reconnect?: { initialDelayMs?: number; maxDelayMs?: number };
  /** Default: insecure (plaintext); see grpcCredentials in ./security.ts for TLS. */
  credentials?: grpc.ChannelCredentials;
  /** Bearer token sent when the session opens (docs/security.md). */
  token?: string;
  channelOptions?: grpc.ChannelOptions;
  /** A session that gets no Welcome within this time is abandoned and retried. Default 10 s. */
  welcomeTimeoutMs?: number;
  /**
   * stop() without drain reports the attempts in hand as FAILED and says
   * Goodbye; it waits this long for the server to confirm (the stream ending
   * cleanly) before it closes the stream anyway. Default 2 s.
   */
  abortReportTimeoutMs?: number;
  logger?: RunnerLogger;
}

/** One assigned attempt. Finish it exactly once with succeed or fail; later calls are ignored. */
export interface RunnerJob {
  /** The rollout's input as plain JSON (null when it was enqueued without one). */
  readonly input: JsonValue;
  /** The rollout as the server sent it (config, metadata, ids). */
  readonly rollout: Rollout;
  readonly attempt: Attempt;
  /** Aborted when the server cancels the attempt (reason: AttemptCancelledError) or the runner stops without draining. */
  readonly signal: AbortSignal;
  /** A sign of life; `metadata` (optional) is merged into the attempt's metadata. */
  reportRunning(metadata?: JsonObject): void;
  /**
   * SUCCEEDED with `result` (any JSON value; becomes Attempt.result and
   * Rollout.result). A result over the bound (RESULT_MAX_BYTES, RESULT_MAX_DEPTH)
   * reports FAILED with the reason instead.
   */
  succeed(result?: JsonValue, metadata?: JsonObject): void;
  fail(errorMessage: string, metadata?: JsonObject): void;
}

/**
 * A run() handler: what it resolves to is the attempt's result (plain JSON;
 * undefined for none); a throw reports FAILED with the error's message.
 */
export type RunnerHandler = (job: RunnerJob) => Promise<JsonValue | undefined | void>;

export interface RunnerStatus {
  state: "new" | "running" | "draining" | "stopped";
  connected: boolean;
  sessionId: string | undefined;
  lastAck: { sequence: bigint; serverTime: Date | undefined; receivedAt: Date } | undefined;
  /** Attempts assigned and not yet finished. */
  heldAttemptIds: string[];
}

export interface RunnerEvents {
  connected: [welcome: Welcome];
  /** The session ended; error is the gRPC status error, or undefined when it ended with OK. */
  disconnected: [error: grpc.ServiceError | undefined];
  heartbeatAck: [ack: HeartbeatAck];
  assignment: [job: RunnerJob];
  cancelled: [attemptId: string, reason: string];
  rejected: [rejected: Rejected];
  drain: [drain: Drain];
}
