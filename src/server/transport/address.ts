/** "host:port", "[v6]:port" or ":port" as the host and port to listen on. */
export function parseListenAddress(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(":");
  const portText = address.slice(colon + 1);
  const port = Number(portText);
  if (colon < 0 || portText === "" || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`invalid listen address "${address}": expected host:port`);
  }
  const host = address.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
  return { host: host === "" ? "0.0.0.0" : host, port };
}

/**
 * A client's address as handlers see it: IPv4 clients of a dual-stack socket
 * show up as "::ffff:1.2.3.4"; both transports report plain "1.2.3.4" so a
 * per-address rule matches whichever way the client came in.
 */
export function normalizePeerAddress(address: string | undefined): string {
  if (address === undefined) {
    return "";
  }
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

/** A listener that could not bind its address; `reason` is said for people ("address already in use"). */
export class ListenError extends Error {
  constructor(
    readonly address: string,
    /** The system's code when known: EADDRINUSE, EACCES, EADDRNOTAVAIL… */
    readonly code: string | undefined,
    readonly reason: string,
  ) {
    super(`cannot listen on ${address}: ${reason}`);
    this.name = "ListenError";
  }
}

const LISTEN_REASONS: Record<string, string> = {
  EADDRINUSE: "address already in use (another process, perhaps another server, listens there)",
  EACCES: "permission denied (ports below 1024 need privileges)",
  EADDRNOTAVAIL: "no network interface of this machine has that address",
  ENOTFOUND: "the host name does not resolve",
};

/** The error of a failed listen (Node's, or grpc-js's, which wraps Node's in its text) as a ListenError. */
export function listenError(address: string, error: unknown): ListenError {
  const text = error instanceof Error ? error.message : String(error);
  const own = (error as { code?: unknown }).code;
  const code = typeof own === "string" ? own : /\b(E[A-Z]{3,})\b/.exec(text)?.[1];
  return new ListenError(address, code, (code !== undefined ? LISTEN_REASONS[code] : undefined) ?? text);
}
