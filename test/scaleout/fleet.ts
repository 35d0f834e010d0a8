/**
 * Helpers for the scale-out tests: several `runnerline serve` processes
 * ("replicas") on one PostgreSQL database, a TCP forwarder a test can re-point
 * from one replica to another, and a raw runner session that speaks the
 * protocol message by message.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { createRunnerlineClients, type RunnerlineClients } from "../../src/client/clients.js";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import {
  type HelloSchema,
  RunnerService,
  type SessionRequest,
  SessionRequestSchema,
  type SessionResponse,
} from "../../src/gen/runnerline/v1/runner_pb.js";
import { Channel } from "../e2e/drivers.js";
import { type CliProcess, startCli } from "../liveness/processes.js";

/** Heartbeat interval the replicas announce; the grace is the default 3 × interval unless a test sets another. */
export const HEARTBEAT_S = 0.25;

export interface Replica {
  name: string;
  process: CliProcess;
  port: number;
  /** "127.0.0.1:PORT", for runners. */
  address: string;
  clients: RunnerlineClients;
}

/**
 * Starts `runnerline serve` on `store` (node itself, through tsx, so SIGKILL
 * hits the server) on ports of its choosing, and waits until it listens.
 */
export async function startReplica(name: string, store: string, extra: string[] = []): Promise<Replica> {
  const child = startCli(
    [
      "serve",
      "--store", store,
      "--grpc-addr", "127.0.0.1:0",
      "--http-addr", "127.0.0.1:0",
      "--heartbeat-interval", String(HEARTBEAT_S),
      "--drain-timeout", "1",
      ...extra,
    ],
    // The flags decide, whatever the environment of the test says.
    { RUNNERLINE_STORE: "", RUNNERLINE_LOG_LEVEL: "" },
  );
  const serving = /serving gRPC on [\d.]+:(\d+)/;
  await Promise.race([
    child.waitFor(serving, 60_000),
    child.exited.then((code) => {
      throw new Error(`replica ${name} exited with ${code} before listening:\n${child.output()}`);
    }),
  ]);
  const port = Number(serving.exec(child.output())![1]);
  const address = `127.0.0.1:${port}`;
  return { name, process: child, port, address, clients: createRunnerlineClients({ baseUrl: `http://${address}` }) };
}

/** Starts one replica per name on the same store, all at once (they migrate the schema under a lock). */
export function startReplicas(names: string[], store: string, extra: string[] = []): Promise<Replica[]> {
  return Promise.all(names.map((name) => startReplica(name, store, extra)));
}

export function isAlive(replica: Replica): boolean {
  return replica.process.child.exitCode === null && replica.process.child.signalCode === null;
}

export async function stopReplicas(replicas: Replica[]): Promise<void> {
  const distinct = [...new Map(replicas.map((r) => [r.process, r])).values()];
  // RUNNERLINE_SCALEOUT_LOGS=1: each replica's log, for looking into a failure.
  if (process.env.RUNNERLINE_SCALEOUT_LOGS === "1") {
    for (const replica of distinct) process.stderr.write(`---- replica ${replica.name}\n${replica.process.output()}\n`);
  }
  await Promise.all(
    distinct.filter(isAlive).map(async (replica) => {
      replica.process.child.kill("SIGKILL");
      await replica.process.exited;
    }),
  );
}

/** Drops a database freshDatabase() made, once nothing uses it (best effort: a leftover is harmless). */
export async function dropDatabase(url: string, adminUrl: string): Promise<void> {
  const name = new URL(url).pathname.slice(1);
  const admin = new pg.Client({ connectionString: adminUrl });
  try {
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  } catch {
    // Left for whoever cleans the test server.
  } finally {
    await admin.end().catch(() => undefined);
  }
}

type Message = MessageInitShape<typeof SessionRequestSchema>["message"];
type Response = SessionResponse["message"];
type Of<K extends NonNullable<Response["case"]>> = Extract<Response, { case: K }>["value"];

/**
 * One runner session, message by message, over the real RunnerService stream
 * (protocol only: no SDK). `next(kind)` skips other kinds; a stream that ends
 * makes it reject with the stream's error (a ConnectError with its code).
 */
export interface RawSession {
  readonly workerId: string;
  send(message: Message): void;
  next<K extends NonNullable<Response["case"]>>(kind: K, timeoutMs?: number): Promise<Of<K>>;
  /** Sends Ready{slots}. */
  ready(slots?: number): void;
  /** Sends a heartbeat and resolves on its ack: every message sent before it has been handled. */
  roundTrip(attemptIds?: string[], timeoutMs?: number): Promise<void>;
  report(attemptId: string, status: AttemptStatus, errorMessage?: string): void;
  /** How the stream ended (the ConnectError), once it has; undefined while it is open. */
  readonly ended: ConnectError | undefined;
  /** Resolves with the error the stream ended with. */
  readonly closed: Promise<ConnectError>;
  /** Goodbye, then the end of the request stream (the worker turns OFFLINE). */
  leave(): void;
  /** Drops the stream without Goodbye (the worker turns UNKNOWN). */
  drop(): void;
}

/** Opens a session on `address` with `hello` and waits for Welcome. */
export async function openSession(
  address: string,
  hello: MessageInitShape<typeof HelloSchema> & { workerId: string },
): Promise<{ session: RawSession; welcome: Of<"welcome"> }> {
  const client = createClient(RunnerService, createGrpcTransport({ baseUrl: `http://${address}` }));
  const outgoing = new Channel<SessionRequest>();
  const abort = new AbortController();
  const incoming: Response[] = [];
  const waiters = new Set<() => void>();
  const notify = () => {
    for (const waiter of waiters) waiter();
  };
  let ended: ConnectError | undefined;
  let sequence = 0n;
  let resolveClosed!: (error: ConnectError) => void;
  const closed = new Promise<ConnectError>((resolve) => (resolveClosed = resolve));
  const send = (message: Message) => outgoing.push(create(SessionRequestSchema, { message }));
  send({ case: "hello", value: { capacity: 1, ...hello } });
  void (async () => {
    try {
      for await (const response of client.session(outgoing, { signal: abort.signal })) {
        incoming.push(response.message);
        notify();
      }
      // Ended by the server with OK: no gRPC error code, so Unknown with a message that says so.
      ended = new ConnectError("stream ended with status OK", Code.Unknown);
    } catch (error) {
      ended = ConnectError.from(error);
    }
    resolveClosed(ended);
    notify();
  })();

  /** Waits until `take` finds something in what has arrived; rejects once the stream has ended or the time is up. */
  const take = async <T>(what: string, find: () => T | undefined, timeoutMs: number): Promise<T> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = find();
      if (found !== undefined) return found;
      if (ended !== undefined) throw ended;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`session ${hello.workerId}: no ${what} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, left);
        waiters.add(done);
      });
    }
  };
  const next = <K extends NonNullable<Response["case"]>>(kind: K, timeoutMs = 5_000): Promise<Of<K>> =>
    take<{ value: unknown }>(
      kind,
      () => {
        const index = incoming.findIndex((m) => m.case === kind);
        if (index < 0) return undefined;
        // Messages of other kinds before it are skipped for good (heartbeat acks are left for roundTrip).
        const skipped = incoming.splice(0, index + 1);
        incoming.unshift(...skipped.filter((m) => m.case === "heartbeatAck"));
        return { value: skipped.at(-1)!.value };
      },
      timeoutMs,
    ).then((found) => found.value as never);

  const session: RawSession = {
    workerId: hello.workerId,
    send,
    next,
    ready: (slots = 1) => send({ case: "ready", value: { slots } }),
    async roundTrip(attemptIds = [], timeoutMs = 5_000) {
      const seq = ++sequence;
      send({ case: "heartbeat", value: { sequence: seq, attemptIds } });
      await take(
        "heartbeat ack",
        () => {
          const index = incoming.findIndex((m) => m.case === "heartbeatAck" && m.value.sequence >= seq);
          return index < 0 ? undefined : incoming.splice(index, 1);
        },
        timeoutMs,
      );
    },
    report: (attemptId, status, errorMessage = "") => send({ case: "attemptUpdate", value: { attemptId, status, errorMessage } }),
    get ended() {
      return ended;
    },
    closed,
    leave() {
      send({ case: "goodbye", value: { reason: "test done" } });
      outgoing.end();
    },
    drop() {
      abort.abort();
    },
  };
  const welcome = await next("welcome", 15_000);
  return { session, welcome };
}
