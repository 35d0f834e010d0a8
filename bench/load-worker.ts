/**
 * One load-generator process: holds many runner sessions over a few HTTP/2
 * connections and speaks the real protocol (Hello, Heartbeat, Ready,
 * AttemptUpdate), driven by the bench over IPC. It never shares a process with
 * the server, so what the server's probe reports is the server's own cost.
 *
 * Roles of a session: "beat" (heartbeats only, for ingest) and "runner"
 * (grants one credit, completes each assignment at once and grants again:
 * with Ready, or by the update itself where the session's Welcome confirmed
 * that a terminal update returns its credit; see SessionMessages).
 */
import { create, fromJson, toBinary } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { AttemptStatus } from "../src/gen/runnerline/v1/attempt_pb.js";
import { EnqueueRolloutRequestSchema, EnqueueRolloutsRequestSchema, RolloutMode } from "../src/gen/runnerline/v1/rollout_pb.js";
import type { SessionResponse } from "../src/gen/runnerline/v1/runner_pb.js";
import { serveCommands } from "./lib/ipc-commands.js";
import { Reservoir, sleep, waitUntil } from "./lib/stats.js";
import {
  assignmentsIn,
  encodeRequest,
  endSessions,
  benchMetadata,
  helloOptions,
  HeartbeatEncoder,
  newChannel,
  openSession,
  RolloutService,
  type SessionCall,
  type SessionMessages,
  syntheticSnapshot,
  unary,
  wallMs,
} from "./lib/wire.js";

type Role = "beat" | "runner";

interface Session {
  workerId: string;
  /** The server this session talks to (a fleet's replicas each have one). */
  address: string;
  role: Role;
  call: SessionCall;
  encoder: HeartbeatEncoder;
  welcomed: boolean;
  /** Welcome confirmed that a terminal update returns its credit: no Ready after each assignment. */
  creditFromUpdates: boolean;
  failed: boolean;
  sequence: number;
  /** Send times of heartbeats not yet acknowledged (acks come back in order). */
  unacked: number[];
  onAck: (() => void) | undefined;
}

const workerIndex = Number(process.argv[2] ?? 0);
const channels = new Map<string, grpc.Client[]>();
let sessions: Session[] = [];
const latencies = new Reservoir(60_000);
let acked = 0;
/** Heartbeats acknowledged per server address, since the last reset. */
const ackedByAddress = new Map<string, number>();
let sent = 0;
let skipped = 0;
let assigned = 0;
/** Assignments received per server address since arm(). */
const assignedByAddress = new Map<string, number>();
let mode: "idle" | "saturate" = "idle";
let beatTimer: NodeJS.Timeout | undefined;
let progressTimer: NodeJS.Timeout | undefined;
/** Rollout id → enqueue start time, for push latency. */
const pushStarts = new Map<string, number>();
const pushLatencies: number[] = [];
/** The address of the server whose session received each push, parallel to pushLatencies. */
const pushReceivedAt: string[] = [];
let preparedBatches: Buffer[] = [];

const readyOne = encodeRequest({ case: "ready", value: { slots: 1 } });

function channelsFor(address: string, count: number): grpc.Client[] {
  let list = channels.get(address);
  if (list === undefined) channels.set(address, (list = []));
  while (list.length < count) list.push(newChannel(address));
  return list.slice(0, count);
}

function sendBeat(session: Session): void {
  if (session.unacked.length >= 64) {
    skipped++; // the server has fallen far behind this session: do not queue without bound
    return;
  }
  session.unacked.push(wallMs());
  session.call.write(session.encoder.encode(++session.sequence));
  sent++;
}

function onResponse(session: Session, response: SessionResponse): void {
  const message = response.message;
  switch (message.case) {
    case "welcome":
      session.welcomed = true;
      session.creditFromUpdates = message.value.terminalUpdateReturnsCredit;
      return;
    case "heartbeatAck": {
      const sentAt = session.unacked.shift();
      if (sentAt !== undefined) {
        latencies.add(wallMs() - sentAt);
        acked++;
        ackedByAddress.set(session.address, (ackedByAddress.get(session.address) ?? 0) + 1);
      }
      const onAck = session.onAck;
      session.onAck = undefined;
      onAck?.();
      if (mode === "saturate" && session.role === "beat") sendBeat(session);
      return;
    }
    case "assignment":
    case "assignmentBatch": {
      const receivedAt = wallMs();
      for (const assignment of assignmentsIn(response)) {
        const attemptId = assignment.attempt?.attemptId ?? "";
        const rolloutId = assignment.rollout?.rolloutId ?? "";
        const startedAt = pushStarts.get(rolloutId);
        if (startedAt !== undefined) {
          pushStarts.delete(rolloutId);
          pushLatencies.push(receivedAt - startedAt);
          pushReceivedAt.push(session.address);
        }
        assigned++;
        assignedByAddress.set(session.address, (assignedByAddress.get(session.address) ?? 0) + 1);
        session.call.write(encodeRequest({ case: "attemptUpdate", value: { attemptId, status: AttemptStatus.SUCCEEDED } }));
        if (!session.creditFromUpdates) session.call.write(readyOne);
      }
      return;
    }
    default:
      return;
  }
}

async function connect(args: {
  address: string;
  count: number;
  prefix: string;
  channels: number;
  role: Role;
  first?: number;
  messages?: SessionMessages;
}) {
  const started = Date.now();
  const clients = channelsFor(args.address, args.channels);
  const created: Session[] = [];
  const chunk = 500;
  for (let from = 0; from < args.count; from += chunk) {
    const batch: Session[] = [];
    for (let i = from; i < Math.min(args.count, from + chunk); i++) {
      const hostIndex = (args.first ?? 0) + i;
      const workerId = `${args.prefix}-${hostIndex}`;
      const call = openSession(clients[i % clients.length]!);
      const session: Session = {
        workerId,
        address: args.address,
        role: args.role,
        call,
        encoder: new HeartbeatEncoder(syntheticSnapshot(hostIndex)),
        welcomed: false,
        creditFromUpdates: false,
        failed: false,
        sequence: 0,
        unacked: [],
        onAck: undefined,
      };
      call.on("data", (response: SessionResponse) => onResponse(session, response));
      call.on("error", () => (session.failed = true));
      call.on("end", () => (session.failed = true));
      call.write(
        encodeRequest({
          case: "hello",
          value: {
            workerId,
            capacity: 1,
            clientVersion: "runnerline-bench",
            labels: { pool: "bench", rack: `r${hostIndex % 20}` },
            ...(args.role === "runner" && helloOptions(args.messages ?? "lean")),
          },
        }),
      );
      batch.push(session);
    }
    await waitUntil(() => batch.every((s) => s.welcomed || s.failed), 60_000, 5);
    created.push(...batch);
  }
  sessions.push(...created);
  const opened = created.filter((s) => s.welcomed && !s.failed).length;
  return { opened, failed: created.length - opened, ms: Date.now() - started };
}

/** Open loop: every session beats `rateHz` times a second, phases spread evenly. */
function beatStart(args: { rateHz: number }) {
  const beaters = sessions.filter((s) => s.role === "beat" && !s.failed);
  if (beaters.length === 0) return { beaters: 0 };
  const started = performance.now();
  let cursor = 0;
  let total = 0;
  beatTimer = setInterval(() => {
    const due = Math.floor(((performance.now() - started) / 1000) * args.rateHz * beaters.length);
    // Bounded catch-up per tick: if this process lags, the achieved rate shows it.
    const limit = Math.min(due, total + beaters.length);
    while (total < limit) {
      const session = beaters[cursor]!;
      cursor = (cursor + 1) % beaters.length;
      total++;
      if (!session.failed) sendBeat(session);
    }
    total = due;
  }, 5);
  return { beaters: beaters.length };
}

/** Closed loop: each session sends its next heartbeat as soon as the previous one is acknowledged. */
function saturateStart() {
  mode = "saturate";
  const beaters = sessions.filter((s) => s.role === "beat" && !s.failed);
  for (const session of beaters) sendBeat(session);
  return { beaters: beaters.length };
}

function beatStop() {
  mode = "idle";
  if (beatTimer !== undefined) clearInterval(beatTimer);
  beatTimer = undefined;
  return {};
}

function reset() {
  latencies.reset();
  acked = sent = skipped = 0;
  ackedByAddress.clear();
  return { cpu: process.cpuUsage() };
}

function read() {
  const cpu = process.cpuUsage();
  return {
    acked,
    ackedByAddress: Object.fromEntries(ackedByAddress),
    sent,
    skipped,
    samples: latencies.samples,
    failedSessions: sessions.filter((s) => s.failed).length,
    cpuUs: cpu.user + cpu.system,
  };
}

/** Runner sessions take their first credit; progress events follow every 20 ms while the count moves. */
function arm() {
  assigned = 0;
  assignedByAddress.clear();
  let reported = -1;
  progressTimer = setInterval(() => {
    if (assigned !== reported) {
      reported = assigned;
      process.send!({ event: "progress", worker: workerIndex, assigned });
    }
  }, 20);
  for (const session of sessions) if (session.role === "runner" && !session.failed) session.call.write(readyOne);
  return {};
}

/** A heartbeat round trip on every runner session: everything they sent before is processed once it returns. */
async function flush() {
  const started = wallMs();
  if (progressTimer !== undefined) clearInterval(progressTimer);
  progressTimer = undefined;
  const runners = sessions.filter((s) => s.role === "runner" && !s.failed);
  await Promise.all(
    runners.map(
      (session) =>
        new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 30_000);
          session.onAck = () => {
            clearTimeout(timer);
            resolve();
          };
          sendBeat(session);
        }),
    ),
  );
  return { assigned, assignedByAddress: Object.fromEntries(assignedByAddress), ms: wallMs() - started, finishedAt: wallMs() };
}

/** With labelSets > 0, rollout i requires rack r(i mod labelSets): runners carry rack r(host mod 20). */
function enqueueRequest(id: string, index: number, labelSets: number) {
  return create(EnqueueRolloutRequestSchema, {
    rolloutId: id,
    input: fromJson(ValueSchema, { prompt: `Solve task ${index}: what is ${index} * 7?`, seed: index }),
    mode: RolloutMode.TRAIN,
    metadata: { step: 1, source: "bench" },
    config: labelSets > 0 ? { requiredLabels: { rack: `r${index % labelSets}` } } : undefined,
  });
}

/** Serializes the whole workload before the clock starts, so the producer costs little while measured. */
function prepareEnqueue(args: { total: number; batch: number; prefix: string; labelSets?: number }) {
  preparedBatches = [];
  for (let from = 0; from < args.total; from += args.batch) {
    const requests = [];
    for (let i = from; i < Math.min(args.total, from + args.batch); i++) requests.push(enqueueRequest(`${args.prefix}-${i}`, i, args.labelSets ?? 0));
    const bytes = toBinary(EnqueueRolloutsRequestSchema, create(EnqueueRolloutsRequestSchema, { requests }));
    preparedBatches.push(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  }
  return { batches: preparedBatches.length };
}

async function runEnqueue(args: { address: string; concurrency: number }) {
  const [client] = channelsFor(args.address, 1);
  const path = `/${RolloutService.typeName}/${RolloutService.method.enqueueRollouts.name}`;
  const started = wallMs();
  let next = 0;
  const lane = async () => {
    while (next < preparedBatches.length) {
      const body = preparedBatches[next++]!;
      await new Promise<void>((resolve, reject) =>
        client!.makeUnaryRequest(
          path,
          (buffer: Buffer) => buffer,
          // The answer is read by the server's cost, not decoded here.
          (bytes: Buffer) => bytes.length,
          body,
          benchMetadata("admin"),
          { deadline: Date.now() + 120_000 },
          (error) => (error ? reject(error) : resolve()),
        ),
      );
    }
  };
  await Promise.all(Array.from({ length: args.concurrency }, lane));
  return { ms: wallMs() - started };
}

/**
 * Push latency: runners in this process wait for work; rollouts are enqueued
 * one at a time at `rate` per second from this process too, so both ends of
 * each measurement read the same clock.
 */
async function push(args: { address: string; rate: number; count: number; prefix: string }) {
  pushLatencies.length = 0;
  pushReceivedAt.length = 0;
  pushStarts.clear();
  const [client] = channelsFor(args.address, 1);
  const started = performance.now();
  let failures = 0;
  const inflight: Promise<void>[] = [];
  for (let i = 0; i < args.count; i++) {
    const dueIn = started + (i * 1000) / args.rate - performance.now();
    if (dueIn > 0) await sleep(dueIn);
    const rolloutId = `${args.prefix}-${i}`;
    pushStarts.set(rolloutId, wallMs());
    inflight.push(
      unary(client!, RolloutService, "enqueueRollout", enqueueRequest(rolloutId, i, 0)).then(
        () => undefined,
        () => void failures++,
      ),
    );
  }
  await Promise.all(inflight);
  await waitUntil(() => pushStarts.size === 0, 5_000);
  return { samples: pushLatencies.slice(), receivedAt: pushReceivedAt.slice(), lost: pushStarts.size, failures };
}

async function closeAll() {
  beatStop();
  if (progressTimer !== undefined) clearInterval(progressTimer);
  progressTimer = undefined;
  await endSessions(
    sessions.map((session) => session.call),
    [...channels.values()].flat(),
  );
  sessions = [];
  channels.clear();
  return {};
}

serveCommands({
  connect,
  beatStart,
  saturateStart,
  beatStop,
  reset,
  read,
  arm,
  flush,
  prepareEnqueue,
  runEnqueue,
  push,
  closeAll,
});
