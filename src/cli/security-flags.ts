import type { ServerOptions } from "../server/config.js";
import type { Limits } from "../server/services/limits.js";

/** parseArgs options of `serve` for auth, TLS and limits (docs/security.md, docs/limits.md). */
export const SECURITY_OPTIONS = {
  "auth-file": { type: "string" },
  "insecure-no-auth": { type: "boolean" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  "tls-client-ca": { type: "string" },
  "max-message-bytes": { type: "string" },
  "http-max-message-bytes": { type: "string" },
  "max-response-bytes": { type: "string" },
  "max-input-bytes": { type: "string" },
  "max-result-bytes": { type: "string" },
  "max-queued-rollouts": { type: "string" },
  "max-sessions": { type: "string" },
  "max-sessions-per-connection": { type: "string" },
  "heartbeat-rate-limit": { type: "string" },
} as const;

export const SECURITY_USAGE = `
  --auth-file           bearer tokens with roles, YAML or JSON; reloaded on SIGHUP (env RUNNERLINE_AUTH_FILE;
                        see docs/security.md). Without it the server only listens on loopback addresses
  --insecure-no-auth    listen beyond loopback without tokens (env RUNNERLINE_INSECURE_NO_AUTH=1)
  --tls-cert, --tls-key PEM certificate and key: TLS on both ports (env RUNNERLINE_TLS_CERT, RUNNERLINE_TLS_KEY)
  --tls-client-ca       PEM CA: clients must present a certificate it signed (env RUNNERLINE_TLS_CLIENT_CA)
  --max-message-bytes, --http-max-message-bytes, --max-response-bytes, --max-input-bytes, --max-result-bytes,
  --max-queued-rollouts, --max-sessions, --max-sessions-per-connection, --heartbeat-rate-limit
                        bounds, see docs/limits.md (env RUNNERLINE_ + the flag in upper case with '_')`;

type Values = { [K in keyof typeof SECURITY_OPTIONS]?: (typeof SECURITY_OPTIONS)[K]["type"] extends "boolean" ? boolean : string };

const LIMIT_FLAGS: [keyof Values, keyof Limits][] = [
  ["max-response-bytes", "maxResponseBytes"],
  ["max-input-bytes", "maxInputBytes"],
  ["max-result-bytes", "maxResultBytes"],
  ["max-queued-rollouts", "maxQueuedRollouts"],
  ["max-sessions", "maxSessions"],
  ["max-sessions-per-connection", "maxSessionsPerConnection"],
  ["heartbeat-rate-limit", "heartbeatsPerSecond"],
];

/** Flags win over environment variables (RUNNERLINE_AUTH_FILE for --auth-file, and so on). */
export function applySecurityFlags(values: Values, env: NodeJS.ProcessEnv, config: ServerOptions): void {
  const get = (flag: keyof Values): string | undefined => {
    const value = values[flag];
    return typeof value === "string" ? value : env[`RUNNERLINE_${flag.toUpperCase().replaceAll("-", "_")}`] || undefined;
  };
  const authFile = get("auth-file");
  if (authFile) config.authFile = authFile;
  if (values["insecure-no-auth"] === true || env.RUNNERLINE_INSECURE_NO_AUTH === "1") config.insecureNoAuth = true;
  const cert = get("tls-cert");
  const key = get("tls-key");
  const clientCa = get("tls-client-ca");
  if (cert || key || clientCa) config.tls = { cert, key, clientCa };
  const grpcMax = get("max-message-bytes");
  const httpMax = get("http-max-message-bytes");
  if (grpcMax) config.maxMessageBytes = count("--max-message-bytes", grpcMax, 1);
  if (httpMax) config.httpMaxMessageBytes = count("--http-max-message-bytes", httpMax, 1);
  const limits: Partial<Limits> = {};
  for (const [flag, field] of LIMIT_FLAGS) {
    const text = get(flag);
    // A heartbeat rate of 0 turns the limit off; every other bound must be positive.
    if (text) limits[field] = count(`--${flag}`, text, field === "heartbeatsPerSecond" ? 0 : 1);
  }
  if (Object.keys(limits).length > 0) config.limits = { ...config.limits, ...limits };
}

function count(flag: string, text: string, min: number): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < min) throw new Error(`${flag} must be an integer of at least ${min}`);
  return value;
}
