/**
 * One load process of the peer scenario (bench/peer.ts): the same no-op
 * workload consumed either from Runnerline (runner sessions speaking the real
 * protocol) or from BullMQ (a Worker with the same concurrency), so the two
 * dispatchers are compared with the same shape of consumers. Driven over IPC
 * like bench/load-worker.ts.
 *
 * "Done" means the final outcome was handed back: a SUCCEEDED AttemptUpdate
 * written to the stream, or BullMQ's `completed` event (emitted after the job
 * is moved to completed in Redis). Runnerline's count is confirmed by a
 * heartbeat round trip on every session at the end (the server answers in
 * order, so every update sent before it has been applied).
 */
import { create, fromJson, toBinary } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { Queue, Worker as BullWorker } from "bullmq";
import { AttemptStatus } from "../src/gen/runnerline/v1/attempt_pb.js";
import { EnqueueRolloutRequestSchema, EnqueueRolloutsRequestSchema } from "../src/gen/runnerline/v1/rollout_pb.js";
import type { SessionResponse } from "../src/gen/runnerline/v1/runner_pb.js";
import { enqueueGraphile as addGraphileJobs, type GraphileConfig, GraphileConsumer } from "./lib/graphile.js";
import { serveCommands } from "./lib/ipc-commands.js";
import { waitUntil } from "./lib/stats.js";
import {
  assignmentsIn,
  encodeRequest,
  endSessions,
  HeartbeatEncoder,
  helloOptions,
  newChannel,
  openSession,
  RolloutService,
  type SessionCall,
  type SessionMessages,
  syntheticSnapshot,
  wallMs,
} from "./lib/wire.js";

const processIndex = Number(process.argv[2] ?? 0);

interface RunnerSession {
  call: SessionCall;
  /** The server it talks to. */
  address: string;
  capacity: number;
  welcomed: boolean;
  /** Welcome confirmed that a terminal update returns its credit: no Ready after each job. */
  creditFromUpdates: boolean;
  failed: boolean;
  onAck: (() => void) | undefined;
}

let sessions: RunnerSession[] = [];
let clients: grpc.Client[] = [];
let bullWorker: BullWorker | undefined;
let graphile: GraphileConsumer | undefined;
let done = 0;
/** Runnerline jobs finished per server address since start(). */
const doneByAddress = new Map<string, number>();
let progressTimer: NodeJS.Timeout | undefined;
const readyOne = encodeRequest({ case: "ready", value: { slots: 1 } });
const heartbeat = new HeartbeatEncoder(syntheticSnapshot(processIndex));

/** Every 20 ms while the count moves, the bench hears how many jobs this process finished. */
function startProgress(): void {
  let reported = -1;
  progressTimer = setInterval(() => {
    if (done === reported) return;
    reported = done;
    process.send!({ event: "progress", worker: processIndex, done, at: wallMs() });
  }, 20);
}

function onRunnerResponse(session: RunnerSession, response: SessionResponse, failFirst: boolean): void {
  const message = response.message;
  if (message.case === "welcome") {
    session.welcomed = true;
    session.creditFromUpdates = message.value.terminalUpdateReturnsCredit;
  } else if (message.case === "heartbeatAck") {
    const onAck = session.onAck;
    session.onAck = undefined;
    onAck?.();
  }
  for (const assignment of assignmentsIn(response)) {
    const attempt = assignment.attempt!;
    const fails = failFirst && attempt.sequenceId === 1;
    session.call.write(
      encodeRequest({
        case: "attemptUpdate",
        value: fails
          ? { attemptId: attempt.attemptId, status: AttemptStatus.FAILED, errorMessage: "the first attempt fails" }
          : { attemptId: attempt.attemptId, status: AttemptStatus.SUCCEEDED },
      }),
    );
    if (!fails) {
      done++;
      doneByAddress.set(session.address, (doneByAddress.get(session.address) ?? 0) + 1);
    }
    if (!session.creditFromUpdates) session.call.write(readyOne);
  }
}

/**
 * Opens `sessions` runner sessions of `capacity` slots each; they take work only after start(). With several
 * addresses (a fleet's replicas), session i of process p talks to addresses[(p + i) mod R], one connection each.
 */
async function runnerlineConsumers(args: {
  addresses: string[];
  sessions: number;
  capacity: number;
  failFirst: boolean;
  prefix: string;
  messages: SessionMessages;
}) {
  clients = args.addresses.map((address) => newChannel(address));
  for (let i = 0; i < args.sessions; i++) {
    const at = (processIndex + i) % clients.length;
    const call = openSession(clients[at]!);
    const session: RunnerSession = {
      call,
      address: args.addresses[at]!,
      capacity: args.capacity,
      welcomed: false,
      creditFromUpdates: false,
      failed: false,
      onAck: undefined,
    };
    call.on("data", (response: SessionResponse) => onRunnerResponse(session, response, args.failFirst));
    call.on("error", () => (session.failed = true));
    call.on("end", () => (session.failed = true));
    call.write(
      encodeRequest({
        case: "hello",
        value: {
          workerId: `${args.prefix}-${processIndex}-${i}`,
          capacity: args.capacity,
          clientVersion: "runnerline-bench-peer",
          ...helloOptions(args.messages),
        },
      }),
    );
    sessions.push(session);
  }
  await waitUntil(() => sessions.every((s) => s.welcomed || s.failed), 30_000, 5);
  const failed = sessions.filter((s) => !s.welcomed || s.failed).length;
  if (failed > 0) throw new Error(`${failed} of ${sessions.length} sessions did not open`);
  return {};
}

/** A BullMQ worker with `concurrency`, not running until start(). */
function bullmqConsumers(args: { port: number; queue: string; concurrency: number; failFirst: boolean }) {
  bullWorker = new BullWorker(
    args.queue,
    async (job) => {
      if (args.failFirst && job.attemptsMade === 0) throw new Error("the first attempt fails");
    },
    { connection: { host: "127.0.0.1", port: args.port }, concurrency: args.concurrency, autorun: false },
  );
  bullWorker.on("completed", () => void done++);
  bullWorker.on("error", () => {});
  return {};
}

/** A graphile-worker runner with `concurrency` on the database at `url`, not running until start(). */
function graphileConsumers(args: { url: string; concurrency: number; config: GraphileConfig }) {
  graphile = new GraphileConsumer({ ...args, onDone: () => void done++ });
  return {};
}

async function start() {
  done = 0;
  doneByAddress.clear();
  startProgress();
  for (const session of sessions) {
    session.call.write(encodeRequest({ case: "ready", value: { slots: session.capacity } }));
  }
  if (bullWorker !== undefined) void bullWorker.run();
  await graphile?.start();
  return {};
}

/** Runnerline only: a heartbeat round trip on every session, so every update sent before has been applied. */
async function flush() {
  await Promise.all(
    sessions.map(
      (session) =>
        new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 30_000);
          session.onAck = () => {
            clearTimeout(timer);
            resolve();
          };
          session.call.write(heartbeat.encode(1));
        }),
    ),
  );
  return { done, doneByAddress: Object.fromEntries(doneByAddress), finishedAt: wallMs() };
}

function payload(index: number) {
  return { prompt: `Solve task ${index}: what is ${index} * 7?`, seed: index };
}

/** Enqueues `total` rollouts in batches of `batch`, one batch at a time; returns when the last is acknowledged. */
async function enqueueRunnerline(args: { address: string; total: number; batch: number; prefix: string; retry: boolean }) {
  const client = newChannel(args.address);
  const path = `/${RolloutService.typeName}/${RolloutService.method.enqueueRollouts.name}`;
  const config = args.retry ? { maxAttempts: 2, retryOn: [AttemptStatus.FAILED] } : undefined;
  // Encoded before the clock starts, as BullMQ's jobs are plain objects ready to send.
  const bodies: Buffer[] = [];
  for (let from = 0; from < args.total; from += args.batch) {
    const requests = [];
    for (let i = from; i < Math.min(args.total, from + args.batch); i++) {
      requests.push(
        create(EnqueueRolloutRequestSchema, { rolloutId: `${args.prefix}-${i}`, input: fromJson(ValueSchema, payload(i)), config }),
      );
    }
    const bytes = toBinary(EnqueueRolloutsRequestSchema, create(EnqueueRolloutsRequestSchema, { requests }));
    bodies.push(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  }
  const startedAt = wallMs();
  for (const body of bodies) {
    await new Promise<void>((resolve, reject) =>
      client.makeUnaryRequest(
        path,
        (buffer: Buffer) => buffer,
        (bytes: Buffer) => bytes.length,
        body,
        { deadline: Date.now() + 120_000 },
        (error) => (error ? reject(error) : resolve()),
      ),
    );
  }
  const finishedAt = wallMs();
  client.close();
  return { startedAt, finishedAt };
}

async function enqueueBullmq(args: { port: number; queue: string; total: number; batch: number; retry: boolean }) {
  const queue = new Queue(args.queue, { connection: { host: "127.0.0.1", port: args.port } });
  await queue.waitUntilReady();
  const batches: { name: string; data: unknown; opts: { jobId: string; attempts: number } }[][] = [];
  for (let from = 0; from < args.total; from += args.batch) {
    const jobs = [];
    for (let i = from; i < Math.min(args.total, from + args.batch); i++) {
      jobs.push({ name: "rollout", data: payload(i), opts: { jobId: `job-${i}`, attempts: args.retry ? 2 : 1 } });
    }
    batches.push(jobs);
  }
  const startedAt = wallMs();
  for (const jobs of batches) await queue.addBulk(jobs);
  const finishedAt = wallMs();
  await queue.close();
  return { startedAt, finishedAt };
}

/** Adds the same jobs with graphile-worker's addJobs, in the same batches. */
function enqueueGraphile(args: { url: string; total: number; batch: number }) {
  return addGraphileJobs({ ...args, payload });
}

async function closeAll() {
  if (progressTimer !== undefined) clearInterval(progressTimer);
  progressTimer = undefined;
  await endSessions(
    sessions.map((session) => session.call),
    clients,
  );
  sessions = [];
  clients = [];
  if (bullWorker !== undefined) await bullWorker.close(true);
  bullWorker = undefined;
  await graphile?.stop();
  graphile = undefined;
  return {};
}

serveCommands({
  runnerlineConsumers,
  bullmqConsumers,
  graphileConsumers,
  start,
  flush,
  enqueueRunnerline,
  enqueueBullmq,
  enqueueGraphile,
  closeAll,
});
