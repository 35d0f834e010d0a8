/**
 * The fuzz run: a real server, requests that fast-check generates sent over
 * both ports with raw clients (grpc-js with pass-through serializers, fetch
 * for Connect, node:http2 for broken gRPC framing), and the invariants of
 * issue 10 §5 checked after every case.
 */
import http2 from "node:http2";
import { create, type DescMessage, type DescMethod, type DescService, fromBinary, type MessageShape, toBinary, toJson } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import fc from "fast-check";
import { AttemptService, AttemptStatus, ListAttemptsResponseSchema } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { ListRolloutsResponseSchema, RolloutService, RolloutStatus, RolloutView } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { RunnerService, SessionRequestSchema } from "../../src/gen/runnerline/v1/runner_pb.js";
import { ListWorkersResponseSchema, WorkerService, WorkerStatus } from "../../src/gen/runnerline/v1/worker_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { isAttemptActive } from "../../src/server/domain/attempt.js";
import { encode, LIVE_ATTEMPT, LIVE_ROLLOUT, messageInit, mutate, mutation } from "./arbitraries.js";
import { KNOWN_DEFECTS, type Outcome } from "./known-defects.js";

const SERVICES: DescService[] = [WorkerService, RolloutService, AttemptService];
const UNARY = SERVICES.flatMap((s) => s.methods.filter((m) => m.methodKind === "unary"));
const STREAMING = SERVICES.flatMap((s) => s.methods.filter((m) => m.methodKind === "server_streaming"));
const ALL = [...UNARY, ...STREAMING, ...RunnerService.methods];
const path = (m: DescMethod) => `/${m.parent.typeName}/${m.name}`;
const RSS_LIMIT = 2 * 1024 ** 3;

// ---- what a case sends ------------------------------------------------------

/** A request body: a generated message as encoded, damaged, or replaced by noise. */
const body = (method: DescMethod) =>
  fc.oneof(
    { weight: 5, arbitrary: messageInit(method.input).map((init) => ({ init, damage: undefined, noise: undefined })) },
    { weight: 2, arbitrary: fc.tuple(messageInit(method.input), mutation).map(([init, damage]) => ({ init, damage, noise: undefined })) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((noise) => ({ init: undefined, damage: undefined, noise })) },
  );
type Body = { init: unknown; damage: Parameters<typeof mutate>[1] | undefined; noise: Uint8Array | undefined };

const pick = <T>(items: readonly T[]) => fc.constantFrom(...items);

const jsonDamage = fc.oneof(
  fc.constant("none" as const),
  fc.constant("unknown-key" as const),
  fc.constant("null-field" as const),
  fc.constant("bad-enum" as const),
  fc.constant("truncate" as const),
);

export const fuzzCase = fc.oneof(
  { weight: 6, arbitrary: pick(UNARY).chain((method) => body(method).map((b) => ({ kind: "grpc-unary" as const, method, body: b }))) },
  {
    weight: 4,
    arbitrary: fc
      .tuple(pick(UNARY), fc.boolean(), jsonDamage)
      .chain(([method, json, damage]) => body(method).map((b) => ({ kind: "connect-unary" as const, method, body: b, json, damage }))),
  },
  { weight: 1, arbitrary: pick(STREAMING).chain((method) => body(method).map((b) => ({ kind: "grpc-stream" as const, method, body: b }))) },
  {
    weight: 3,
    arbitrary: fc
      .tuple(body(RunnerService.methods[0]!), fc.array(body(RunnerService.methods[0]!), { maxLength: 6 }), fc.boolean())
      .map(([hello, steps, halfClose]) => ({ kind: "session" as const, hello, steps, halfClose })),
  },
  {
    weight: 1,
    arbitrary: fc
      .tuple(pick(ALL), fc.constantFrom("short", "compressed", "huge-length", "noise", "trailing-garbage", "no-content-type"), fc.uint8Array({ maxLength: 32 }))
      .map(([method, framing, bytes]) => ({ kind: "framing" as const, method, framing, bytes })),
  },
);
export type FuzzCase = typeof fuzzCase extends fc.Arbitrary<infer T> ? T : never;

// ---- running cases ------------------------------------------------------------

export interface FuzzReport {
  cases: number;
  outcomes: Map<string, number>;
  pending: Map<string, number>;
  findings: { case: string; problem: string }[];
  /** Milliseconds spent per kind of case, for tuning the mix. */
  time: Map<string, number>;
}

export class FuzzTarget {
  private server!: RunningServer;
  private raw!: grpc.Client;
  private health!: grpc.Client;
  /** Invariant reads go over their own connection, so a case that breaks its connection cannot fail them. */
  private reader!: grpc.Client;
  private h2!: http2.ClientHttp2Session;
  private rollouts: string[] = [];
  private attempts: string[] = [];
  private readonly terminal = new Map<string, RolloutStatus>();
  readonly report: FuzzReport = { cases: 0, outcomes: new Map(), pending: new Map(), findings: [], time: new Map() };

  async start() {
    this.server = await startServer({
      grpcAddress: "127.0.0.1:0",
      httpAddress: "127.0.0.1:0",
      store: "memory",
      heartbeatIntervalMs: 200,
      drainTimeoutMs: 200,
      log: () => {},
    });
    const address = `127.0.0.1:${this.server.grpcPort}`;
    this.raw = this.connect();
    this.health = new grpc.Client(address, grpc.credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 });
    this.reader = new grpc.Client(address, grpc.credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1, "grpc.max_receive_message_length": 64 * 1024 * 1024 });
    this.h2 = http2.connect(`http://${address}`);
    this.h2.on("error", () => undefined);
    this.rollouts = [];
    this.attempts = [];
    this.terminal.clear();
  }

  private connect(): grpc.Client {
    return new grpc.Client(`127.0.0.1:${this.server.grpcPort}`, grpc.credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 });
  }

  async stop() {
    this.raw.close();
    this.health.close();
    this.reader.close();
    this.h2.destroy();
    await this.server.close();
  }

  /** Fresh server and state, so long runs do not slow down as the store grows. */
  async restart() {
    await this.stop();
    await this.start();
  }

  async run(c: FuzzCase): Promise<void> {
    this.report.cases++;
    const started = performance.now();
    const outcomes = await this.send(c);
    if (hasLongString("body" in c ? c.body : "hello" in c ? [c.hello, c.steps] : undefined)) {
      // An oversize id echoed into a status message stalls the client's
      // connection for seconds (issue 14.5); a fresh one keeps the stall from
      // reaching the next cases, and this case's own stall is that defect.
      for (const outcome of outcomes) outcome.message = `${outcome.message} [oversize string sent]`;
      this.raw.close();
      this.raw = this.connect();
    }
    this.report.time.set(c.kind, (this.report.time.get(c.kind) ?? 0) + performance.now() - started);
    for (const outcome of outcomes) this.judge(c, outcome);
    const checked = performance.now();
    for (const problem of await this.invariants()) this.report.findings.push({ case: describe(c), problem });
    this.report.time.set("invariants", (this.report.time.get("invariants") ?? 0) + performance.now() - checked);
  }

  private judge(c: FuzzCase, outcome: Outcome) {
    const key = `${outcome.transport} ${outcome.code}`;
    this.report.outcomes.set(key, (this.report.outcomes.get(key) ?? 0) + 1);
    // A call other than WaitRollouts that runs into its deadline got no answer at all.
    const unanswered = outcome.code === Code.DeadlineExceeded && outcome.method !== "WaitRollouts" && outcome.kind === "unary";
    const bad = outcome.code === "hung" || outcome.code === Code.Internal || outcome.code === Code.Unknown || unanswered;
    if (!bad) return;
    const pending = KNOWN_DEFECTS.find((p) => p.matches(outcome));
    if (pending) {
      this.report.pending.set(pending.issue, (this.report.pending.get(pending.issue) ?? 0) + 1);
      return;
    }
    this.report.findings.push({ case: describe(c), problem: `${outcome.kind} ${outcome.method} over ${outcome.transport}: ${outcome.code} ${outcome.message}` });
  }

  private bytesOf(method: DescMethod, b: Body): Uint8Array {
    if (b.noise) return b.noise;
    const bytes = encode(method.input, b.init, (marker) => this.liveId(marker)) ?? new Uint8Array();
    return b.damage ? mutate(bytes, b.damage) : bytes;
  }

  private liveId(marker: string): string {
    const pool = marker === LIVE_ROLLOUT ? this.rollouts : marker === LIVE_ATTEMPT ? this.attempts : [];
    return pool.length === 0 ? "ro-none" : (pool[Math.floor(Math.random() * pool.length)] as string);
  }

  private async send(c: FuzzCase): Promise<Outcome[]> {
    switch (c.kind) {
      case "grpc-unary":
        return [await this.grpcUnary(c.method, this.bytesOf(c.method, c.body))];
      case "connect-unary":
        return [await this.connectUnary(c.method, c.body, c.json, c.damage)];
      case "grpc-stream":
        return [await this.grpcStream(c.method, this.bytesOf(c.method, c.body))];
      case "session":
        return [await this.session(c)];
      case "framing":
        return [await this.framing(c.method, c.framing, c.bytes)];
    }
  }

  private grpcUnary(method: DescMethod, bytes: Uint8Array): Promise<Outcome> {
    const deadline = Date.now() + (method.name === "WaitRollouts" ? 300 : 2_000);
    return new Promise((resolve) => {
      this.raw.makeUnaryRequest(path(method), (b: Buffer) => b, (b: Buffer) => b, Buffer.from(bytes), new grpc.Metadata(), { deadline }, (error, reply) => {
        if (!error && reply) this.learn(method, reply);
        resolve({ kind: "unary", transport: "grpc", method: method.name, code: error?.code ?? 0, message: error?.details ?? "" });
      });
    });
  }

  private async connectUnary(method: DescMethod, b: Body, json: boolean, damage: string): Promise<Outcome> {
    let payload: Uint8Array | string = this.bytesOf(method, b);
    if (json) {
      payload = jsonBody(method, b.init, damage, (m) => this.liveId(m));
    }
    const url = `http://127.0.0.1:${this.server.httpPort}${path(method)}`;
    const headers = { "content-type": json ? "application/json" : "application/proto", "connect-timeout-ms": method.name === "WaitRollouts" ? "300" : "5000" };
    try {
      const response = await fetch(url, { method: "POST", headers, body: typeof payload === "string" ? payload : Buffer.from(payload) });
      const text = Buffer.from(await response.arrayBuffer());
      if (response.status === 200) return { kind: "unary", transport: "connect", method: method.name, code: 0, message: "" };
      const error = JSON.parse(text.toString("utf8")) as { code?: string; message?: string };
      return { kind: "unary", transport: "connect", method: method.name, code: codeFromName(error.code), message: error.message ?? "" };
    } catch (error) {
      return { kind: "unary", transport: "connect", method: method.name, code: Code.Unknown, message: `transport: ${String(error)}` };
    }
  }

  private grpcStream(method: DescMethod, bytes: Uint8Array): Promise<Outcome> {
    return new Promise((resolve) => {
      const call = this.raw.makeServerStreamRequest(path(method), (b: Buffer) => b, (b: Buffer) => b, Buffer.from(bytes), new grpc.Metadata(), {
        deadline: Date.now() + 5_000,
      });
      const timer = setTimeout(() => call.cancel(), 50);
      call.on("data", () => undefined);
      call.on("error", () => undefined);
      call.on("status", (status: grpc.StatusObject) => {
        clearTimeout(timer);
        const code = status.code === grpc.status.CANCELLED ? 0 : status.code;
        resolve({ kind: "stream", transport: "grpc", method: method.name, code, message: status.details });
      });
    });
  }

  private session(c: Extract<FuzzCase, { kind: "session" }>): Promise<Outcome> {
    const method = RunnerService.methods[0]!;
    return new Promise((resolve) => {
      const call = this.raw.makeBidiStreamRequest(path(method), (b: Buffer) => b, (b: Buffer) => b, new grpc.Metadata(), {
        deadline: Date.now() + 10_000,
      });
      let ended = false;
      const hang = setTimeout(() => {
        if (ended) return;
        ended = true;
        call.cancel();
        const damaged = [c.hello, ...c.steps].some((step) => step.noise !== undefined || step.damage !== undefined);
        const sent = damaged ? "after a damaged frame" : "with only well-formed frames";
        resolve({ kind: "session", transport: "grpc", method: "Session", code: "hung", message: `no status 3 s after the client finished, ${sent}` });
      }, 3_000);
      call.on("data", () => undefined);
      call.on("error", () => undefined);
      call.on("status", (status: grpc.StatusObject) => {
        clearTimeout(hang);
        if (ended) return;
        ended = true;
        const code = status.code === grpc.status.CANCELLED ? 0 : status.code;
        resolve({ kind: "session", transport: "grpc", method: "Session", code, message: status.details });
      });
      const hello = c.hello.noise ? c.hello : { ...c.hello, init: { message: { case: "hello", value: helloValue(c.hello.init) } } };
      call.write(Buffer.from(this.bytesOf(method, hello)));
      for (const step of c.steps) call.write(Buffer.from(this.bytesOf(method, step)));
      // Give the server a moment, then leave the way the case says.
      setTimeout(() => (c.halfClose ? call.end() : call.cancel()), 20);
    });
  }

  private framing(method: DescMethod, framing: string, bytes: Uint8Array): Promise<Outcome> {
    return new Promise((resolve) => {
      const headers: http2.OutgoingHttpHeaders = { ":method": "POST", ":path": path(method), te: "trailers" };
      if (framing !== "no-content-type") headers["content-type"] = "application/grpc";
      let stream: http2.ClientHttp2Stream;
      try {
        stream = this.h2.request(headers);
      } catch (error) {
        resolve({ kind: "framing", transport: "http2", method: method.name, code: 0, message: String(error) });
        return;
      }
      let grpcStatus: number | undefined;
      let message = "";
      const read = (h: http2.IncomingHttpHeaders) => {
        if (h["grpc-status"] !== undefined) grpcStatus = Number(h["grpc-status"]);
        if (h["grpc-message"] !== undefined) message = decodeURIComponent(String(h["grpc-message"]));
      };
      stream.on("response", read);
      stream.on("trailers", read);
      stream.on("data", () => undefined);
      stream.on("error", () => undefined);
      const timer = setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), 1_000);
      stream.on("close", () => {
        clearTimeout(timer);
        resolve({ kind: "framing", transport: "http2", method: method.name, code: grpcStatus ?? 0, message });
      });
      const prefix = (flag: number, length: number) => {
        const b = Buffer.alloc(5);
        b[0] = flag;
        b.writeUInt32BE(length >>> 0, 1);
        return b;
      };
      const data = Buffer.from(bytes);
      switch (framing) {
        case "short":
          stream.end(Buffer.concat([prefix(0, data.length + 10), data]));
          break;
        case "compressed":
          stream.end(Buffer.concat([prefix(1, data.length), data]));
          break;
        case "huge-length":
          stream.end(Buffer.concat([prefix(0, 0xffffffff), data]));
          break;
        case "trailing-garbage":
          stream.end(Buffer.concat([prefix(0, 0), data.subarray(0, 3)]));
          break;
        default:
          stream.end(data);
      }
    });
  }

  /** Remembers ids from answers, so later cases name rollouts and attempts that exist. */
  private learn(method: DescMethod, reply: Buffer) {
    if (method.name !== "EnqueueRollout" && method.name !== "EnqueueRollouts" && method.name !== "DequeueRollout") return;
    const text = reply.toString("latin1");
    for (const match of text.matchAll(/(ro|at)-[0-9a-f]{16}/g)) {
      const pool = match[1] === "ro" ? this.rollouts : this.attempts;
      if (pool.length < 200) pool.push(match[0]);
      else pool[Math.floor(Math.random() * pool.length)] = match[0];
    }
  }

  // ---- invariants -------------------------------------------------------------

  async invariants(): Promise<string[]> {
    const problems: string[] = [];
    const health = this.healthCheck();
    const rss = process.memoryUsage().rss;
    if (rss > RSS_LIMIT) problems.push(`RSS ${Math.round(rss / 2 ** 20)} MiB is over ${RSS_LIMIT / 2 ** 20} MiB`);
    const [rollouts, attempts, workers] = await Promise.all([
      this.listAll(RolloutService.method.listRollouts, ListRolloutsResponseSchema, (r) => r.rollouts, { view: RolloutView.BASIC }),
      this.listAll(AttemptService.method.listAttempts, ListAttemptsResponseSchema, (r) => r.attempts),
      this.listAll(WorkerService.method.listWorkers, ListWorkersResponseSchema, (r) => r.workers),
    ]).catch((error: Error) => {
      problems.push(`listing state failed: ${error.message}`);
      return [[], [], []] as const;
    });
    const serving = await health;
    if (serving !== 1) problems.push(`health did not answer SERVING (${serving})`);
    const active = new Map<string, string[]>();
    const held = new Map<string, Set<string>>();
    for (const attempt of attempts) {
      if (!isAttemptActive(attempt.status)) continue;
      active.set(attempt.rolloutId, [...(active.get(attempt.rolloutId) ?? []), attempt.attemptId]);
      if (!held.has(attempt.workerId)) held.set(attempt.workerId, new Set());
      held.get(attempt.workerId)!.add(attempt.attemptId);
    }
    for (const [rolloutId, ids] of active) if (ids.length > 1) problems.push(`rollout ${rolloutId} has ${ids.length} active attempts`);
    for (const rollout of rollouts) {
      const before = this.terminal.get(rollout.rolloutId);
      if (before !== undefined && before !== rollout.status) {
        problems.push(`rollout ${rollout.rolloutId} left terminal ${RolloutStatus[before]} for ${RolloutStatus[rollout.status]}`);
      }
      if ([RolloutStatus.SUCCEEDED, RolloutStatus.FAILED, RolloutStatus.CANCELLED].includes(rollout.status)) this.terminal.set(rollout.rolloutId, rollout.status);
    }
    for (const worker of workers) {
      const holds = held.get(worker.workerId) ?? new Set<string>();
      const says = new Set(worker.currentAttemptIds);
      if (says.size !== holds.size || [...says].some((id) => !holds.has(id))) {
        problems.push(`worker ${worker.workerId} lists [${[...says]}] but holds active [${[...holds]}]`);
      }
      if (worker.status === WorkerStatus.IDLE && holds.size > 0) problems.push(`worker ${worker.workerId} is IDLE holding ${holds.size}`);
      if (worker.status === WorkerStatus.BUSY && holds.size === 0) problems.push(`worker ${worker.workerId} is BUSY holding nothing`);
    }
    void AttemptStatus;
    return problems;
  }

  private healthCheck(): Promise<number | string> {
    return new Promise((resolve) => {
      this.health.makeUnaryRequest(
        "/grpc.health.v1.Health/Check",
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.alloc(0),
        new grpc.Metadata(),
        { deadline: Date.now() + 5_000 },
        (error, reply) => resolve(error ? `error ${error.code} ${error.details}` : (reply?.[1] ?? 0)),
      );
    });
  }

  private async listAll<S extends DescMessage, T>(
    method: DescMethod,
    schema: S,
    items: (response: MessageShape<S>) => T[],
    extra: Record<string, unknown> = {},
  ): Promise<T[]> {
    const all: T[] = [];
    let pageToken = "";
    do {
      const request = toBinary(method.input, create(method.input, { pageSize: 1000, pageToken, ...extra } as never));
      const reply = await new Promise<Buffer>((resolve, reject) =>
        this.reader.makeUnaryRequest(path(method), (b: Buffer) => b, (b: Buffer) => b, Buffer.from(request), new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (error, value) =>
          error ? reject(new Error(`${method.name}: ${error.code} ${error.details}`)) : resolve(value!),
        ),
      );
      const response = fromBinary(schema, reply);
      all.push(...items(response));
      pageToken = (response as unknown as { nextPageToken: string }).nextPageToken;
    } while (pageToken !== "");
    return all;
  }
}

/** Does the case carry a string long enough to overflow a client's metadata limit when echoed? */
function hasLongString(value: unknown): boolean {
  if (typeof value === "string") return value.length > 8_000;
  if (value instanceof Uint8Array || value === null || typeof value !== "object") return false;
  return Object.values(value).some(hasLongString);
}

/** Hello's own fields from a generated init, whatever it was generated for. */
function helloValue(init: unknown): Record<string, unknown> {
  const value = (init as { message?: { value?: Record<string, unknown> } } | undefined)?.message?.value ?? {};
  const workerId = typeof value.workerId === "string" ? value.workerId : "w-1";
  return {
    workerId,
    capacity: typeof value.capacity === "number" ? value.capacity : 1,
    labels: value.labels ?? {},
    // The session options as generated, so that sessions with and without them are both fuzzed.
    terminalUpdateReturnsCredit: value.terminalUpdateReturnsCredit === true,
    acceptsAssignmentBatches: value.acceptsAssignmentBatches === true,
  };
}

function jsonBody(method: DescMethod, init: unknown, damage: string, resolve: (m: string) => string): string {
  let json: Record<string, unknown> = {};
  const bytes = encode(method.input, init, resolve);
  if (bytes) {
    try {
      json = (toJsonOf(method, bytes) ?? {}) as Record<string, unknown>;
    } catch {
      json = {};
    }
  }
  const first = method.input.fields[0];
  switch (damage) {
    case "unknown-key":
      json.notAField = 1;
      break;
    case "null-field":
      if (first) json[first.jsonName] = null;
      break;
    case "bad-enum": {
      const field = method.input.fields.find((f) => f.fieldKind === "enum" || (f.fieldKind === "list" && f.listKind === "enum"));
      if (field) json[field.jsonName] = field.fieldKind === "list" ? ["NOT_A_VALUE"] : "NOT_A_VALUE";
      break;
    }
    case "truncate":
      return JSON.stringify(json).slice(0, -1);
  }
  return JSON.stringify(json);
}

function toJsonOf(method: DescMethod, bytes: Uint8Array): unknown {
  return toJson(method.input, fromBinary(method.input, bytes));
}

const CODE_NAMES = new Map(
  Object.entries(Code)
    .filter(([, v]) => typeof v === "number")
    .map(([name, v]) => [name.replace(/[A-Z]/g, (c, i) => (i === 0 ? c.toLowerCase() : `_${c.toLowerCase()}`)), v as number]),
);
const codeFromName = (name: string | undefined) => CODE_NAMES.get(name ?? "") ?? Code.Unknown;

function describe(c: FuzzCase): string {
  return JSON.stringify(c, (k, v) => (k === "method" ? `${v.parent.typeName}.${v.name}` : typeof v === "bigint" ? `${v}n` : v instanceof Uint8Array ? Buffer.from(v).toString("hex") : typeof v === "string" && v.length > 80 ? `${v.slice(0, 20)}…(${v.length})` : v)).slice(0, 600);
}

void SessionRequestSchema;

/** Runs `cases` generated cases against one server (restarted every `restartEvery`); returns the report. */
export async function fuzz(options: { cases: number; seed?: number; restartEvery?: number; onProgress?: (report: FuzzReport) => void }): Promise<FuzzReport> {
  const target = new FuzzTarget();
  await target.start();
  const restartEvery = options.restartEvery ?? 2_000;
  try {
    await fc.assert(
      fc.asyncProperty(fuzzCase, async (c) => {
        await target.run(c);
        if (target.report.cases % restartEvery === 0) {
          await target.restart();
          options.onProgress?.(target.report);
        }
      }),
      { numRuns: options.cases, seed: options.seed, endOnFailure: true },
    );
  } finally {
    await target.stop();
  }
  return target.report;
}
