import net from "node:net";
import { fromJson } from "@bufbuild/protobuf";
import type { JsonValue } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { createRunnerlineClients } from "../../src/client/clients.js";
import type { RunnerlineClients } from "../../src/client/clients.js";
import type { RunnerLogger } from "../../src/client/runner.js";
import type { Rollout } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { startServer } from "../../src/server/app.js";

export interface TestServer {
  grpcAddress: string;
  httpBaseUrl: string;
  clients: RunnerlineClients;
  close(): Promise<void>;
}

export async function startTestServer(options: { heartbeatIntervalMs?: number } = {}): Promise<TestServer> {
  const server = await startServer({
    grpcAddress: "127.0.0.1:0",
    httpAddress: "127.0.0.1:0",
    store: "memory",
    log: () => {},
    ...options,
  });
  const grpcAddress = `127.0.0.1:${server.grpcPort}`;
  return {
    grpcAddress,
    httpBaseUrl: `http://127.0.0.1:${server.httpPort}`,
    clients: createRunnerlineClients({ baseUrl: `http://${grpcAddress}` }),
    close: async () => {
      await server.close();
    },
  };
}

export async function enqueue(clients: RunnerlineClients, input: JsonValue): Promise<Rollout> {
  const { rollout } = await clients.rollouts.enqueueRollout({ input: fromJson(ValueSchema, input) });
  if (!rollout) throw new Error("enqueueRollout returned no rollout");
  return rollout;
}

export { eventually } from "../polling.js";

export const silentLogger: RunnerLogger = { debug() {}, info() {}, warn() {}, error() {} };

/**
 * A TCP relay between a runner and the server, so a test can sever the
 * connection the way a network fault does (both sides see a reset) and
 * refuse new connections until it is restored.
 */
export class TcpRelay {
  private readonly sockets = new Set<net.Socket>();
  private refusing = false;
  private server: net.Server | undefined;
  address = "";

  constructor(private readonly target: { host: string; port: number }) {}

  async start(): Promise<void> {
    const server = net.createServer((client) => {
      if (this.refusing) {
        client.resetAndDestroy();
        return;
      }
      const upstream = net.connect(this.target);
      for (const [from, to] of [
        [client, upstream],
        [upstream, client],
      ] as const) {
        this.sockets.add(from);
        from.pipe(to);
        from.on("error", () => to.destroy());
        from.on("close", () => {
          this.sockets.delete(from);
          to.destroy();
        });
      }
    });
    this.server = server;
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    this.address = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  }

  /** Resets every open connection and refuses new ones. */
  cut(): void {
    this.refusing = true;
    for (const socket of this.sockets) socket.resetAndDestroy();
  }

  restore(): void {
    this.refusing = false;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()) ?? resolve());
  }
}
