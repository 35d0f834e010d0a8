import { Command, InvalidArgumentError, Option } from "commander";
import type { RunningServer } from "../server/app.js";
import type { ServerOptions } from "../server/config.js";
import { LOG_LEVELS, type LogLevel } from "../server/log-levels.js";
import { DEFAULT_LIMITS, type Limits } from "../server/services/limits.js";
import type { Synchronous } from "../server/store/sqlite-schema.js";
import { DEFAULT_SYNCHRONOUS, SQLITE_SYNCHRONOUS_SETTINGS } from "../server/store/sqlite-synchronous.js";
import { abandonmentReport, watchShutdownSignals } from "./shutdown-signals.js";
import { durationTextMs } from "../common/duration-text.js";

/**
 * Every flag of `runnerline serve`, in one table: its variable, its help line
 * and what it sets. Help, parsing and the README list come from here; a new
 * flag is one more entry.
 */
interface ServeFlag {
  flag: string;
  env: string;
  /** Placeholder in the help, e.g. "SECONDS"; "" for a switch (set by the flag alone, or by its variable = 1). */
  value: string;
  help: string;
  apply(config: ServerOptions, text: string): void;
}

export const SERVE_FLAGS: readonly ServeFlag[] = [
  {
    flag: "grpc-addr",
    env: "RUNNERLINE_GRPC_ADDR",
    value: "HOST:PORT",
    help: "gRPC listener (default 127.0.0.1:50051)",
    apply: (c, v) => (c.grpcAddress = v),
  },
  {
    flag: "http-addr",
    env: "RUNNERLINE_HTTP_ADDR",
    value: "HOST:PORT",
    help: "Connect/gRPC-Web listener, /healthz and /metrics (default 127.0.0.1:8080)",
    apply: (c, v) => (c.httpAddress = v),
  },
  {
    flag: "store",
    env: "RUNNERLINE_STORE",
    value: "SPEC",
    help:
      "where state lives: memory, sqlite:PATH (default sqlite:./data/runnerline.db; see docs/storage.md), or " +
      "postgres://user@host:port/db, which several servers may share (docs/scaleout.md)",
    apply: (c, v) => (c.store = v),
  },
  {
    flag: "sqlite-synchronous",
    env: "RUNNERLINE_SQLITE_SYNCHRONOUS",
    value: "MODE",
    help:
      `SQLite's fsync policy: normal (acknowledged changes survive a process crash; power loss may undo those since the last checkpoint) ` +
      `or full (an fsync per commit; they survive power loss) (default ${DEFAULT_SYNCHRONOUS}; see docs/storage.md)`,
    apply: (c, v) => {
      if (!(SQLITE_SYNCHRONOUS_SETTINGS as readonly string[]).includes(v)) {
        throw new InvalidArgumentError(`--sqlite-synchronous must be one of ${SQLITE_SYNCHRONOUS_SETTINGS.join(", ")}`);
      }
      c.sqliteSynchronous = v as Synchronous;
    },
  },
  {
    flag: "heartbeat-interval",
    env: "RUNNERLINE_HEARTBEAT_INTERVAL",
    value: "SECONDS",
    help: "how often runners beat (default 5)",
    apply: (c, v) => (c.heartbeatIntervalMs = seconds("--heartbeat-interval", v)),
  },
  {
    flag: "heartbeat-grace",
    env: "RUNNERLINE_HEARTBEAT_GRACE",
    value: "SECONDS",
    help: "lateness that makes a worker UNKNOWN (default 3 × interval)",
    apply: (c, v) => (c.heartbeatGraceMs = seconds("--heartbeat-grace", v)),
  },
  {
    flag: "drain-timeout",
    env: "RUNNERLINE_DRAIN_TIMEOUT",
    value: "SECONDS",
    help: "on SIGTERM, how long runners get to report what they hold (default 30)",
    apply: (c, v) => (c.drainTimeoutMs = seconds("--drain-timeout", v)),
  },
  {
    flag: "keepalive-time",
    env: "RUNNERLINE_KEEPALIVE_TIME",
    value: "SECONDS",
    help: "HTTP/2 ping interval that finds dead peers (default 30)",
    apply: (c, v) => (c.keepaliveTimeMs = seconds("--keepalive-time", v)),
  },
  {
    flag: "brake-min-fleet",
    env: "RUNNERLINE_BRAKE_MIN_FLEET",
    value: "N",
    help: "smallest fleet the mass-drop brake protects (default 10)",
    apply: (c, v) => (c.brakeMinFleet = positiveInteger("--brake-min-fleet", v)),
  },
  {
    flag: "brake-hold",
    env: "RUNNERLINE_BRAKE_HOLD",
    value: "SECONDS",
    help: "how long the brake holds UNRESPONSIVE verdicts (default 4 × grace)",
    apply: (c, v) => (c.brakeHoldMs = seconds("--brake-hold", v)),
  },
  {
    flag: "retry-elsewhere",
    env: "RUNNERLINE_RETRY_ELSEWHERE",
    value: "SECONDS",
    help: "how long a retry keeps away from runners that already ran it while others could take it (default 30)",
    apply: (c, v) => (c.retryElsewhereMs = seconds("--retry-elsewhere", v)),
  },
  {
    flag: "quarantine-failures",
    env: "RUNNERLINE_QUARANTINE_FAILURES",
    value: "N",
    help: "attempts in a row ending FAILED or TIMEOUT that quarantine a runner (default 3)",
    apply: (c, v) => (c.quarantineFailures = positiveInteger("--quarantine-failures", v)),
  },
  {
    flag: "quarantine-window",
    env: "RUNNERLINE_QUARANTINE_WINDOW",
    value: "SECONDS",
    help: "...when they all ended within this many seconds (default 60)",
    apply: (c, v) => (c.quarantineWindowMs = seconds("--quarantine-window", v)),
  },
  {
    flag: "quarantine-backoff",
    env: "RUNNERLINE_QUARANTINE_BACKOFF",
    value: "SECONDS",
    help: "length of the first quarantine; it doubles for each one in a row (default 30)",
    apply: (c, v) => (c.quarantineBackoffMs = seconds("--quarantine-backoff", v)),
  },
  {
    flag: "quarantine-max-backoff",
    env: "RUNNERLINE_QUARANTINE_MAX_BACKOFF",
    value: "SECONDS",
    help: "longest quarantine (default 600)",
    apply: (c, v) => (c.quarantineMaxBackoffMs = seconds("--quarantine-max-backoff", v)),
  },
  {
    flag: "quarantine-max-percent",
    env: "RUNNERLINE_QUARANTINE_MAX_PERCENT",
    value: "PERCENT",
    help: "most of the connected fleet quarantined at once, at least one runner; 0 turns quarantine off (default 10)",
    apply: (c, v) => (c.quarantineMaxPercent = percent("--quarantine-max-percent", v)),
  },
  {
    flag: "history-samples",
    env: "RUNNERLINE_HISTORY_SAMPLES",
    value: "N",
    help: "telemetry samples kept in memory per worker for GetWorkerHistory and the web page's sparklines (default 120)",
    apply: (c, v) => (c.historySamples = positiveInteger("--history-samples", v)),
  },
  {
    flag: "auth-file",
    env: "RUNNERLINE_AUTH_FILE",
    value: "FILE",
    help: "bearer tokens with roles, YAML or JSON, reloaded on SIGHUP (docs/security.md); without it the server only listens on loopback",
    apply: (c, v) => (c.authFile = v),
  },
  {
    flag: "insecure-no-auth",
    env: "RUNNERLINE_INSECURE_NO_AUTH",
    value: "",
    help: "listen beyond loopback without tokens (logs a warning)",
    apply: (c, v) => (c.insecureNoAuth = v === "1" || v === "true"),
  },
  {
    flag: "tls-cert",
    env: "RUNNERLINE_TLS_CERT",
    value: "FILE",
    help: "PEM certificate: TLS on both ports (with --tls-key)",
    apply: (c, v) => (c.tls = { ...c.tls, cert: v }),
  },
  {
    flag: "tls-key",
    env: "RUNNERLINE_TLS_KEY",
    value: "FILE",
    help: "PEM private key of --tls-cert",
    apply: (c, v) => (c.tls = { ...c.tls, key: v }),
  },
  {
    flag: "tls-client-ca",
    env: "RUNNERLINE_TLS_CLIENT_CA",
    value: "FILE",
    help: "PEM CA: clients must present a certificate it signed (mutual TLS)",
    apply: (c, v) => (c.tls = { ...c.tls, clientCa: v }),
  },
  {
    flag: "max-message-bytes",
    env: "RUNNERLINE_MAX_MESSAGE_BYTES",
    value: "BYTES",
    help: "largest message on the gRPC port, each direction (default 16 MiB; docs/limits.md)",
    apply: (c, v) => (c.maxMessageBytes = count("--max-message-bytes", v, 1)),
  },
  {
    flag: "http-max-message-bytes",
    env: "RUNNERLINE_HTTP_MAX_MESSAGE_BYTES",
    value: "BYTES",
    help: "largest message on the HTTP port (default: the gRPC port's)",
    apply: (c, v) => (c.httpMaxMessageBytes = count("--http-max-message-bytes", v, 1)),
  },
  ...limitFlag("max-response-bytes", "BYTES", "maxResponseBytes", "largest response; list pages and waits are cut to fit"),
  ...limitFlag("max-input-bytes", "BYTES", "maxInputBytes", "largest rollout input"),
  ...limitFlag("max-queued-rollouts", "N", "maxQueuedRollouts", "queued rollouts in total; more are refused with RESOURCE_EXHAUSTED"),
  ...limitFlag("max-sessions", "N", "maxSessions", "runner sessions in total"),
  ...limitFlag("max-sessions-per-connection", "N", "maxSessionsPerConnection", "runner sessions on one connection"),
  ...limitFlag("heartbeat-rate-limit", "PER_SECOND", "heartbeatsPerSecond", "heartbeats per second per worker before a flood is refused (0: no limit)"),
  {
    flag: "default-timeout",
    env: "RUNNERLINE_DEFAULT_TIMEOUT",
    value: "DURATION",
    help:
      "attempt timeout of rollouts enqueued without one (their config.timeout), e.g. 30m, 2h; 0: none " +
      "(default 1h; docs/design-decisions.md)",
    apply: (c, v) => (c.defaultTimeoutMs = v.trim() === "0" ? 0 : duration("--default-timeout", v)),
  },
  {
    flag: "retain",
    env: "RUNNERLINE_RETAIN",
    value: "DURATION",
    help: "keep finished rollouts and OFFLINE workers this long, e.g. 7d, 12h, 30m, or seconds (default 7d)",
    apply: (c, v) => (c.retainMs = duration("--retain", v)),
  },
  {
    flag: "forget-after",
    env: "RUNNERLINE_FORGET_AFTER",
    value: "DURATION",
    help: "an UNKNOWN runner with no attempts, silent this long, turns OFFLINE (then --retain applies), e.g. 1h, 30m (default 1h)",
    apply: (c, v) => (c.forgetAfterMs = duration("--forget-after", v)),
  },
  {
    flag: "log-level",
    env: "RUNNERLINE_LOG_LEVEL",
    value: "LEVEL",
    help: `log threshold: ${LOG_LEVELS.join(", ")} (default info); JSON lines, readable on a terminal`,
    apply: (c, v) => {
      if (!(LOG_LEVELS as readonly string[]).includes(v)) throw new InvalidArgumentError(`--log-level must be one of ${LOG_LEVELS.join(", ")}`);
      c.logLevel = v as LogLevel;
    },
  },
];

/** A bound of docs/limits.md as a flag: a whole number, at least 1 (0 allowed where it turns the limit off). */
function limitFlag(flag: string, value: string, field: keyof Limits, help: string): ServeFlag[] {
  const min = field === "heartbeatsPerSecond" ? 0 : 1;
  return [
    {
      flag,
      env: `RUNNERLINE_${flag.toUpperCase().replaceAll("-", "_")}`,
      value,
      help: `${help} (default ${DEFAULT_LIMITS[field]}; docs/limits.md)`,
      apply: (c, v) => (c.limits = { ...c.limits, [field]: count(`--${flag}`, v, min) }),
    },
  ];
}

/** The `serve` command: its options come from SERVE_FLAGS; errors throw (commander's exitOverride). */
export function serveProgram(): Command {
  const command = new Command("serve")
    .description("run the server (gRPC and HTTP listeners)")
    .addHelpText("after", "\nFlags win over environment variables, which win over defaults.")
    .exitOverride()
    .configureOutput({ writeErr: (text) => process.stderr.write(text) });
  for (const flag of SERVE_FLAGS) {
    // The variable is named in the help but read by parseServeArgs, from the env it is given.
    const spec = flag.value === "" ? `--${flag.flag}` : `--${flag.flag} <${flag.value}>`;
    command.addOption(new Option(spec, `${flag.help} [env: ${flag.env}]`));
  }
  return command;
}

/** Flags win over environment variables, which win over defaults. */
export function parseServeArgs(argv: string[], env: NodeJS.ProcessEnv): ServerOptions {
  const command = serveProgram();
  // Under a parent, so help and errors read "runnerline serve".
  new Command("runnerline").exitOverride().addCommand(command).parse(["serve", ...argv], { from: "user" });
  const values = command.opts<Record<string, string | true | undefined>>();
  const config: ServerOptions = {};
  for (const flag of SERVE_FLAGS) {
    const given = values[camelCase(flag.flag)];
    const value = given === true ? "1" : (given ?? env[flag.env]);
    if (value !== undefined && value !== "") flag.apply(config, value);
  }
  return config;
}

const camelCase = (flag: string) => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

function seconds(flag: string, text: string): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new InvalidArgumentError(`${flag} must be a positive number of seconds`);
  return value * 1000;
}

function count(flag: string, text: string, min: number): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < min) throw new InvalidArgumentError(`${flag} must be a whole number of at least ${min}`);
  return value;
}

function percent(flag: string, text: string): number {
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || value < 0 || value > 100) {
    throw new InvalidArgumentError(`${flag} must be a percentage from 0 to 100`);
  }
  return value;
}

function positiveInteger(flag: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${flag} must be a positive integer`);
  return n;
}

/** "7d", "12h", "30m", "45s", "500ms", or a bare number of seconds. */
export function duration(flag: string, text: string): number {
  const ms = durationTextMs(text, "s");
  if (!Number.isFinite(ms) || ms <= 0) throw new InvalidArgumentError(`${flag} must be a positive duration such as 7d, 12h, 30m or 45s`);
  return ms;
}

export async function serveCommand(argv: string[]): Promise<number> {
  const config = parseServeArgs(argv, process.env);
  // Listening for signals before the server starts: a SIGTERM that arrives while it starts (after
  // "serving" is printed, say) must drain it, not kill it with the default action.
  let server: RunningServer | undefined;
  const signalled = new Promise<NodeJS.Signals>((resolve) => {
    watchShutdownSignals((signal, count) => {
      if (count === 1) return resolve(signal);
      if (server !== undefined) for (const line of abandonmentReport(server, signal)) server.logger.warn(line);
      process.exit(signal === "SIGINT" ? 130 : 143);
    });
  });
  // Loaded here, not at the top: `runnerline --help` and the runner need none of the server.
  const { startServer } = await import("../server/app.js");
  server = await startServer(config);
  // Tokens are re-read without dropping sessions (docs/security.md).
  process.on("SIGHUP", () => void server?.reloadAuth());
  const signal = await signalled;
  server.logger.info({ signal }, `${signal}: draining runners, then stopping (${signal} again stops at once)`);
  await server.close();
  return 0;
}
