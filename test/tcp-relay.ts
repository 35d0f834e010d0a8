import net from "node:net";

/**
 * A TCP relay between a client and a server, so a test can sever connections
 * the way a network fault does (both sides see a reset), refuse new ones until
 * it is restored, or send new ones elsewhere. Runners, database pools and
 * replicas' clients all go through it unchanged.
 */
export class TcpRelay {
  private readonly sockets = new Set<net.Socket>();
  /** Client side → server side of each open connection. */
  private readonly pairs = new Map<net.Socket, net.Socket>();
  /** Server sides left open, silent, by cutClientsOnly. */
  private readonly orphans = new Set<net.Socket>();
  private refusing = false;
  private readonly server = net.createServer((client) => this.accept(client));
  address = "";
  port = 0;

  constructor(private target: { host: string; port: number }) {}

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
    this.address = `127.0.0.1:${this.port}`;
    return this;
  }

  /** Resets every open connection and refuses new ones, until restore or pointAt. */
  cut(): void {
    this.refusing = true;
    for (const socket of this.sockets) socket.resetAndDestroy();
  }

  /**
   * Resets the clients' side of every open connection but leaves the server's
   * side open and silent: a half-open connection, as after a network fault
   * the server has not noticed yet. New connections are accepted as before.
   */
  cutClientsOnly(): void {
    for (const [client, upstream] of this.pairs) {
      this.orphans.add(upstream);
      upstream.unpipe(client);
      client.resetAndDestroy();
    }
  }

  restore(): void {
    this.refusing = false;
  }

  /** New connections go to `port` on the same host; open ones are reset (their clients reconnect there). */
  pointAt(port: number): void {
    this.cut();
    this.target = { ...this.target, port };
    this.restore();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    if (this.refusing) {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(this.target);
    this.pairs.set(client, upstream);
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      this.sockets.add(from);
      from.pipe(to);
      from.on("error", () => to.destroy());
      from.on("close", () => {
        this.sockets.delete(from);
        this.pairs.delete(from);
        if (!this.orphans.has(to)) to.destroy();
      });
    }
  }
}
