import { Code, ConnectError } from "@connectrpc/connect";
import { createRunnerlineClients, type RunnerlineClients } from "../../client/clients.js";
import { type ClientSecurity, clientSecurityFromFlags, usesTls } from "../../client/security.js";
import { duration } from "../serve-command.js";
import type { OutputOptions } from "./output.js";

/** Options every operator command takes (defined once on the program). */
export interface GlobalOptions extends OutputOptions {
  server: string;
  /** Unset ones fall back to RUNNERLINE_TOKEN, RUNNERLINE_TLS_CA, RUNNERLINE_TLS_CLIENT_CERT/_KEY (the runner's rule). */
  token?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

export const DEFAULT_SERVER = "127.0.0.1:50051";

/** gRPC clients for --server (HOST:PORT, or a URL), with the token and TLS files of the global flags. */
export function connect(options: GlobalOptions): RunnerlineClients {
  const security = clientSecurity(options);
  const scheme = usesTls(security) ? "https" : "http";
  const baseUrl = options.server.includes("://") ? options.server : `${scheme}://${options.server}`;
  return createRunnerlineClients({ baseUrl, transport: "grpc", security });
}

/** The runner's own reading of the flags and their environment variables; an unreadable file is a usage error. */
function clientSecurity(options: GlobalOptions): ClientSecurity {
  const flags = { token: options.token, "tls-ca": options.tlsCa, "tls-cert": options.tlsCert, "tls-key": options.tlsKey };
  try {
    return clientSecurityFromFlags(flags, process.env);
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

/** A mistake in how the command was called: exit code 1. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The exit codes scripts can rely on (docs/operators.md): 3 and 4 are `rollouts wait`'s. */
export const EXIT = { ok: 0, usage: 1, server: 2, incomplete: 3, unsuccessful: 4 } as const;

/** A duration flag (10m, 30s…) of an operator command; a bad one is a usage error. */
export function usageDuration(flag: string, text: string): number {
  try {
    return duration(flag, text);
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

/** "NOT_FOUND", "UNAVAILABLE": the gRPC name of a status code, as grpcurl prints it. */
export function grpcCodeName(code: Code): string {
  return (Code[code] ?? String(code)).replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** Writes an error the way the exit codes promise: server errors with their code; returns the exit code. */
export function reportError(error: unknown, context = ""): number {
  if (error instanceof UsageError) {
    process.stderr.write(`runnerline: ${context}${error.message}\n`);
    return EXIT.usage;
  }
  const connectError = ConnectError.from(error);
  process.stderr.write(`runnerline: ${context}${grpcCodeName(connectError.code)}: ${connectError.rawMessage}\n`);
  return EXIT.server;
}
