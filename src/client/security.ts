import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";

/** How a client proves itself and checks the server: a bearer token and TLS files (docs/security.md). */
export interface ClientSecurity {
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** PEM of the CA that signed the server's certificate; set (or a client certificate set): TLS. */
  tlsCa?: Buffer;
  /** PEM client certificate and key, for servers that require mutual TLS. */
  tlsCert?: Buffer;
  tlsKey?: Buffer;
}

export const usesTls = (security: ClientSecurity): boolean =>
  security.tlsCa !== undefined || security.tlsCert !== undefined;

/** grpc-js channel credentials for `security`: TLS when it names a CA or a client certificate, else plaintext. */
export function grpcCredentials(security: ClientSecurity): grpc.ChannelCredentials {
  if (!usesTls(security)) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(security.tlsCa ?? null, security.tlsKey ?? null, security.tlsCert ?? null);
}

/** Metadata carrying the token, or undefined without one. */
export function authMetadata(token: string | undefined): grpc.Metadata | undefined {
  if (token === undefined || token === "") return undefined;
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  return metadata;
}

/**
 * --token/--tls-ca/--tls-cert/--tls-key of the CLI clients, falling back to
 * RUNNERLINE_TOKEN, RUNNERLINE_TLS_CA, RUNNERLINE_TLS_CLIENT_CERT and RUNNERLINE_TLS_CLIENT_KEY.
 */
export function clientSecurityFromFlags(
  values: { token?: string; "tls-ca"?: string; "tls-cert"?: string; "tls-key"?: string },
  env: NodeJS.ProcessEnv,
): ClientSecurity {
  const token = values.token ?? env.RUNNERLINE_TOKEN;
  const ca = values["tls-ca"] ?? env.RUNNERLINE_TLS_CA;
  const cert = values["tls-cert"] ?? env.RUNNERLINE_TLS_CLIENT_CERT;
  const key = values["tls-key"] ?? env.RUNNERLINE_TLS_CLIENT_KEY;
  if ((cert === undefined) !== (key === undefined)) throw new Error("--tls-cert and --tls-key go together");
  return {
    ...(token && { token }),
    ...(ca && { tlsCa: readFileSync(ca) }),
    ...(cert && key && { tlsCert: readFileSync(cert), tlsKey: readFileSync(key) }),
  };
}

/** parseArgs options matching clientSecurityFromFlags. */
export const CLIENT_SECURITY_OPTIONS = {
  token: { type: "string" },
  "tls-ca": { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
} as const;

export const CLIENT_SECURITY_USAGE = `  --token         bearer token (env RUNNERLINE_TOKEN)
  --tls-ca        PEM CA of the server's certificate: connect with TLS (env RUNNERLINE_TLS_CA)
  --tls-cert, --tls-key  PEM client certificate and key for mutual TLS (env RUNNERLINE_TLS_CLIENT_CERT/_KEY)`;
