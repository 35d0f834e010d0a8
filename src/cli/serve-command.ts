import { parseArgs } from "node:util";
import { startServer } from "../server/app.js";
import type { ServerOptions } from "../server/config.js";
import { applySecurityFlags, SECURITY_OPTIONS, SECURITY_USAGE } from "./security-flags.js";

const USAGE = `usage: runnerline serve [--grpc-addr HOST:PORT] [--http-addr HOST:PORT] [--store memory|sqlite:PATH]
                       [--heartbeat-interval SECONDS] [--heartbeat-grace SECONDS]

  --grpc-addr           gRPC listener (env RUNNERLINE_GRPC_ADDR, default 127.0.0.1:50051)
  --http-addr           Connect/gRPC-Web listener (env RUNNERLINE_HTTP_ADDR, default 127.0.0.1:8080)
  --store               where state lives: memory, or sqlite:PATH (env RUNNERLINE_STORE,
                        default sqlite:./data/runnerline.db; see docs/storage.md)
  --heartbeat-interval  how often runners beat (env RUNNERLINE_HEARTBEAT_INTERVAL, default 5)
  --heartbeat-grace     lateness that makes a worker UNKNOWN (env RUNNERLINE_HEARTBEAT_GRACE, default 3 × interval)
  --drain-timeout       on SIGTERM, how long runners get to report what they hold (env RUNNERLINE_DRAIN_TIMEOUT, default 30)
  --keepalive-time      HTTP/2 ping interval that finds dead peers (env RUNNERLINE_KEEPALIVE_TIME, default 30)
  --brake-min-fleet     smallest fleet the mass-drop brake protects (env RUNNERLINE_BRAKE_MIN_FLEET, default 10)
  --brake-hold          how long the brake holds UNRESPONSIVE verdicts (env RUNNERLINE_BRAKE_HOLD, default 4 × grace)${SECURITY_USAGE}`;

/** Flags win over environment variables, which win over defaults. */
export function parseServeArgs(argv: string[], env: NodeJS.ProcessEnv): ServerOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      "grpc-addr": { type: "string" },
      "http-addr": { type: "string" },
      store: { type: "string" },
      "heartbeat-interval": { type: "string" },
      "heartbeat-grace": { type: "string" },
      "drain-timeout": { type: "string" },
      "keepalive-time": { type: "string" },
      "brake-min-fleet": { type: "string" },
      "brake-hold": { type: "string" },
      help: { type: "boolean", short: "h" },
      ...SECURITY_OPTIONS,
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const config: ServerOptions = {};
  applySecurityFlags(values, env, config);
  const grpcAddress = values["grpc-addr"] ?? env.RUNNERLINE_GRPC_ADDR;
  const httpAddress = values["http-addr"] ?? env.RUNNERLINE_HTTP_ADDR;
  const store = values.store ?? env.RUNNERLINE_STORE;
  const interval = values["heartbeat-interval"] ?? env.RUNNERLINE_HEARTBEAT_INTERVAL;
  const grace = values["heartbeat-grace"] ?? env.RUNNERLINE_HEARTBEAT_GRACE;
  if (grpcAddress) config.grpcAddress = grpcAddress;
  if (httpAddress) config.httpAddress = httpAddress;
  if (store) config.store = store;
  if (interval) config.heartbeatIntervalMs = seconds("--heartbeat-interval", interval);
  if (grace) config.heartbeatGraceMs = seconds("--heartbeat-grace", grace);
  const drain = values["drain-timeout"] ?? env.RUNNERLINE_DRAIN_TIMEOUT;
  const keepalive = values["keepalive-time"] ?? env.RUNNERLINE_KEEPALIVE_TIME;
  const minFleet = values["brake-min-fleet"] ?? env.RUNNERLINE_BRAKE_MIN_FLEET;
  const hold = values["brake-hold"] ?? env.RUNNERLINE_BRAKE_HOLD;
  if (drain) config.drainTimeoutMs = seconds("--drain-timeout", drain);
  if (keepalive) config.keepaliveTimeMs = seconds("--keepalive-time", keepalive);
  if (hold) config.brakeHoldMs = seconds("--brake-hold", hold);
  if (minFleet) {
    const n = Number(minFleet);
    if (!Number.isInteger(n) || n < 1) throw new Error("--brake-min-fleet must be a positive integer");
    config.brakeMinFleet = n;
  }
  return config;
}

function seconds(flag: string, text: string): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${flag} must be a positive number of seconds`);
  return value * 1000;
}

export async function serveCommand(argv: string[]): Promise<number> {
  const server = await startServer(parseServeArgs(argv, process.env));
  // Tokens are re-read without dropping sessions (docs/security.md).
  process.on("SIGHUP", () => void server.reloadAuth());
  const signal = await new Promise<string>((resolve) => {
    process.once("SIGINT", () => resolve("SIGINT"));
    process.once("SIGTERM", () => resolve("SIGTERM"));
  });
  console.log(`${new Date().toISOString()} ${signal}: draining runners, then stopping`);
  await server.close();
  return 0;
}
