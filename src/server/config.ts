import type { Clock } from "./domain/time.js";
import { DEFAULT_LIMITS, type Limits } from "./services/limits.js";

/** Everything a server can be told at start; see parseServeArgs for the flags and variables. */
export interface ServerConfig {
  grpcAddress: string;
  httpAddress: string;
  /** "memory", or "sqlite:PATH". */
  store: string;
  heartbeatIntervalMs: number;
  /** Heartbeats later than this make a worker UNKNOWN (default 3 × interval). */
  heartbeatGraceMs: number;
  /** Silence after which an attempt without its own unresponsive_timeout becomes UNRESPONSIVE (default: the grace). */
  defaultUnresponsiveMs: number;
  watchdogPeriodMs: number;
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
  clock?: Clock;
  log: (line: string) => void;
}

/** What callers may set: any config field, and any single limit. */
export type ServerOptions = Partial<Omit<ServerConfig, "limits">> & { limits?: Partial<Limits> };

export function defaultConfig(overrides: ServerOptions = {}): ServerConfig {
  const heartbeatIntervalMs = overrides.heartbeatIntervalMs ?? 5_000;
  const heartbeatGraceMs = overrides.heartbeatGraceMs ?? 3 * heartbeatIntervalMs;
  return {
    grpcAddress: "127.0.0.1:50051",
    httpAddress: "127.0.0.1:8080",
    // Durable by default: a fresh `npm start` keeps its state in ./data (docs/storage.md).
    store: "sqlite:./data/runnerline.db",
    heartbeatIntervalMs,
    heartbeatGraceMs,
    defaultUnresponsiveMs: heartbeatGraceMs,
    watchdogPeriodMs: Math.max(50, Math.min(1_000, heartbeatIntervalMs / 5)),
    maxMessageBytes: 16 * 1024 * 1024,
    insecureNoAuth: false,
    keepaliveTimeMs: 30_000,
    keepaliveTimeoutMs: 10_000,
    drainTimeoutMs: 30_000,
    brakeMinFleet: 10,
    brakeHoldMs: 4 * heartbeatGraceMs,
    log: (line) => console.log(`${new Date().toISOString()} ${line}`),
    ...overrides,
    limits: { ...DEFAULT_LIMITS, ...overrides.limits },
  };
}
