import { DEFAULT_RETRY_ELSEWHERE_MS } from "./dispatch/coordinator.js";
import { DEFAULT_QUARANTINE_POLICY } from "./domain/quarantine.js";
import type { Clock } from "./domain/time.js";
import { DEFAULT_HISTORY_MAX_BYTES, DEFAULT_HISTORY_SAMPLES } from "./telemetry/worker-history.js";
import type { LogLevel } from "./log-levels.js";
import type { Logger } from "./logging.js";
import { DEFAULT_LIMITS, type Limits } from "./services/limits.js";
import type { Synchronous } from "./store/sqlite-schema.js";
import { DEFAULT_SYNCHRONOUS } from "./store/sqlite-synchronous.js";

/** Everything a server can be told at start; see parseServeArgs for the flags and variables. */
export interface ServerConfig {
  grpcAddress: string;
  httpAddress: string;
  /** "memory", or "sqlite:PATH". */
  store: string;
  /** PRAGMA synchronous of a SQLite store: what an acknowledgement survives (docs/storage.md). */
  sqliteSynchronous: Synchronous;
  heartbeatIntervalMs: number;
  /** Heartbeats later than this make a worker UNKNOWN (default 3 × interval). */
  heartbeatGraceMs: number;
  /**
   * The attempt timeout of rollouts enqueued without one (config.timeout unset), written into their config; 0: none.
   * Without it a runner that keeps listing a stuck attempt in its heartbeats holds it forever.
   */
  defaultTimeoutMs: number;
  /** Silence after which an attempt without its own unresponsive_timeout becomes UNRESPONSIVE (default: the grace). */
  defaultUnresponsiveMs: number;
  /** Largest message on the gRPC port, each direction. */
  maxMessageBytes: number;
  /** Largest message on the HTTP (Connect, gRPC-Web) port; default: the gRPC port's. */
  httpMaxMessageBytes?: number;
  /** Bounds on input, sessions, queue and responses (docs/limits.md). */
  limits: Limits;
  /** Bearer tokens with roles (docs/security.md); unset: no authentication, loopback only. */
  authFile?: string;
  /** Allows listening beyond loopback without an auth file. */
  insecureNoAuth: boolean;
  /** PEM files for TLS on both ports; a client CA turns on mutual TLS. */
  tls?: { cert?: string; key?: string; clientCa?: string };
  /** HTTP/2 pings on idle gRPC connections find dead peers whose sockets never close. */
  keepaliveTimeMs: number;
  keepaliveTimeoutMs: number;
  /** On shutdown, how long runners get to finish and report what they hold. */
  drainTimeoutMs: number;
  /** Fleets smaller than this are never braked (see MassDropBrake). */
  brakeMinFleet: number;
  /** How long the mass-drop brake holds UNRESPONSIVE verdicts (default 4 × grace). */
  brakeHoldMs: number;
  /** How long a retry keeps away from workers that already ran its rollout while others could take it. */
  retryElsewhereMs: number;
  /** Failed-or-timed-out attempts in a row that quarantine a worker... */
  quarantineFailures: number;
  /** ...when they all ended within this time. */
  quarantineWindowMs: number;
  /** First quarantine's length; it doubles for each one in a row... */
  quarantineBackoffMs: number;
  /** ...up to this. */
  quarantineMaxBackoffMs: number;
  /** At most this percent of the connected fleet is quarantined at once (at least one worker; 0: never). */
  quarantineMaxPercent: number;
  /** Telemetry samples kept in memory per worker for GetWorkerHistory. */
  historySamples: number;
  /** Ceiling on the memory of all workers' history together. */
  historyMaxBytes: number;
  /** Finished rollouts (and their attempts) and OFFLINE workers are removed this long after they ended / went silent. */
  retainMs: number;
  /** An UNKNOWN worker with no attempts, silent this long, turns OFFLINE (then retention removes it). */
  forgetAfterMs: number;
  /** How often retention looks for what to remove (and for workers to forget). */
  retentionPeriodMs: number;
  logLevel: LogLevel;
  clock?: Clock;
  /** The structured log; by default JSON on stdout, readable lines on a terminal (see logging.ts). */
  logger?: Logger;
  /**
   * Where plain log lines go when no `logger` is given: setting it routes the
   * whole log through it as text (tests silence the server with `() => {}`).
   */
  log?: (line: string) => void;
}

/** Attempt timeout of rollouts that set none (docs/design-decisions.md, "Attempt timeout by default"). */
export const DEFAULT_TIMEOUT_MS = 3_600_000;

/** The store of a server given none; the one store whose folder the server creates when missing. */
export const DEFAULT_STORE = "sqlite:./data/runnerline.db";

/** What callers may set: any config field, and any single limit. */
export type ServerOptions = Partial<Omit<ServerConfig, "limits">> & { limits?: Partial<Limits> };

export function defaultConfig(overrides: ServerOptions = {}): ServerConfig {
  const heartbeatIntervalMs = overrides.heartbeatIntervalMs ?? 5_000;
  const heartbeatGraceMs = overrides.heartbeatGraceMs ?? 3 * heartbeatIntervalMs;
  return {
    grpcAddress: "127.0.0.1:50051",
    httpAddress: "127.0.0.1:8080",
    // Durable by default: a fresh `npm start` keeps its state in ./data (docs/storage.md).
    store: DEFAULT_STORE,
    sqliteSynchronous: DEFAULT_SYNCHRONOUS,
    heartbeatIntervalMs,
    heartbeatGraceMs,
    defaultUnresponsiveMs: heartbeatGraceMs,
    defaultTimeoutMs: DEFAULT_TIMEOUT_MS,
    maxMessageBytes: 16 * 1024 * 1024,
    insecureNoAuth: false,
    keepaliveTimeMs: 30_000,
    keepaliveTimeoutMs: 10_000,
    drainTimeoutMs: 30_000,
    brakeMinFleet: 10,
    brakeHoldMs: 4 * heartbeatGraceMs,
    retryElsewhereMs: DEFAULT_RETRY_ELSEWHERE_MS,
    quarantineFailures: DEFAULT_QUARANTINE_POLICY.failures,
    quarantineWindowMs: DEFAULT_QUARANTINE_POLICY.windowMs,
    quarantineBackoffMs: DEFAULT_QUARANTINE_POLICY.backoffMs,
    quarantineMaxBackoffMs: DEFAULT_QUARANTINE_POLICY.maxBackoffMs,
    quarantineMaxPercent: DEFAULT_QUARANTINE_POLICY.maxPercent,
    historySamples: DEFAULT_HISTORY_SAMPLES,
    historyMaxBytes: DEFAULT_HISTORY_MAX_BYTES,
    retainMs: 7 * 24 * 3_600_000,
    forgetAfterMs: 3_600_000,
    retentionPeriodMs: 60_000,
    logLevel: "info",
    ...overrides,
    limits: { ...DEFAULT_LIMITS, ...overrides.limits },
  };
}
