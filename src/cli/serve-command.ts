import { parseArgs } from "node:util";
import { startServer } from "../server/app.js";
import type { ServerConfig } from "../server/config.js";

const USAGE = `usage: runnerline serve [--grpc-addr HOST:PORT] [--http-addr HOST:PORT] [--store memory|sqlite:PATH]
                       [--heartbeat-interval SECONDS] [--heartbeat-grace SECONDS]

  --grpc-addr           gRPC listener (env RUNNERLINE_GRPC_ADDR, default 127.0.0.1:50051)
  --http-addr           Connect/gRPC-Web listener (env RUNNERLINE_HTTP_ADDR, default 127.0.0.1:8080)
  --store               where state lives: memory, or sqlite:PATH (env RUNNERLINE_STORE,
                        default sqlite:./data/runnerline.db; see docs/storage.md)
  --heartbeat-interval  how often runners beat (env RUNNERLINE_HEARTBEAT_INTERVAL, default 5)
  --heartbeat-grace     lateness that makes a worker UNKNOWN (env RUNNERLINE_HEARTBEAT_GRACE, default 3 × interval)`;

/** Flags win over environment variables, which win over defaults. */
export function parseServeArgs(argv: string[], env: NodeJS.ProcessEnv): Partial<ServerConfig> {
  const { values } = parseArgs({
    args: argv,
    options: {
      "grpc-addr": { type: "string" },
      "http-addr": { type: "string" },
      store: { type: "string" },
      "heartbeat-interval": { type: "string" },
      "heartbeat-grace": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const config: Partial<ServerConfig> = {};
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
  return config;
}

function seconds(flag: string, text: string): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${flag} must be a positive number of seconds`);
  return value * 1000;
}

export async function serveCommand(argv: string[]): Promise<number> {
  const server = await startServer(parseServeArgs(argv, process.env));
  await new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  await server.close();
  return 0;
}
