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
