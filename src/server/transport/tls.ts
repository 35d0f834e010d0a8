import { readFileSync } from "node:fs";

/** PEM contents of a server certificate, its key, and optionally the CA that client certificates must chain to. */
export interface TlsFiles {
  cert: Buffer;
  key: Buffer;
  /** Set: mutual TLS, a client without a certificate signed by this CA is refused during the handshake. */
  clientCa?: Buffer;
}

/** Reads --tls-cert/--tls-key/--tls-client-ca; undefined when TLS is off. */
export function readTlsFiles(paths: { cert?: string; key?: string; clientCa?: string }): TlsFiles | undefined {
  if (paths.cert === undefined && paths.key === undefined) {
    if (paths.clientCa !== undefined) throw new Error("--tls-client-ca needs --tls-cert and --tls-key");
    return undefined;
  }
  if (paths.cert === undefined || paths.key === undefined) throw new Error("--tls-cert and --tls-key go together");
  return {
    cert: readFileSync(paths.cert),
    key: readFileSync(paths.key),
    ...(paths.clientCa !== undefined && { clientCa: readFileSync(paths.clientCa) }),
  };
}
