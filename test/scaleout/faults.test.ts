/**
 * Scale-out under faults: three `runnerline serve` replicas on one PostgreSQL
 * database, SDK runners on every replica, several hundred rollouts in flight.
 *
 * 1. One replica is killed with SIGKILL. The others must notice: its workers
 *    turn UNKNOWN and their attempts are judged after the unresponsive
 *    timeout, as for a lost stream; its runners that reconnect to another
 *    replica resume what they held. Each runner reaches its replica through a
 *    TCP forwarder that the test re-points, as a load balancer would.
 * 2. The database itself (a private PostgreSQL, never the shared one) is
 *    crashed and restarted under load; the replicas must ride it out.
 *
 * Either way, every acknowledged rollout exists exactly once, no rollout has
 * two SUCCEEDED attempts, and each ends within its retry policy.
 */
import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { RunnerlineClients } from "../../src/client/clients.js";
import { Runner } from "../../src/client/runner.js";
import { type Attempt, AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { EnqueueRolloutRequestSchema, type Rollout, RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import type { Welcome } from "../../src/gen/runnerline/v1/runner_pb.js";
import { SystemSnapshotSchema } from "../../src/gen/runnerline/v1/telemetry_pb.js";
import { WorkerStatus } from "../../src/gen/runnerline/v1/worker_pb.js";
import { isRolloutTerminal } from "../../src/server/domain/rollout.js";
import { silentLogger } from "../client/helpers.js";
import { eventually } from "../polling.js";
import { freshDatabase, POSTGRES_AVAILABLE, POSTGRES_URL } from "../postgres.js";
import { TcpRelay } from "../tcp-relay.js";
import { dropDatabase, HEARTBEAT_S, isAlive, type Replica, startReplicas, stopReplicas } from "./fleet.js";
import { type PrivatePostgres, startPrivatePostgres } from "./private-postgres.js";

vi.setConfig({ testTimeout: 60_000, hookTimeout: 60_000 });

const MAX_ATTEMPTS = 3;
const RETRY_ON = [AttemptStatus.UNRESPONSIVE, AttemptStatus.FAILED];
/** The rollouts' unresponsive_timeout: long enough for a runner to find another replica before it runs out. */
const UNRESPONSIVE_MS = 3_000;
/**
 * How soon the surviving replicas must notice a dead one (its workers
 * UNKNOWN). Generous: the replicas' own heartbeat period is theirs to choose.
 */
const REPLICA_LOSS_BOUND_MS = 10_000;
const INTERVAL_MS = HEARTBEAT_S * 1000;
/** Mass-drop brake out of the way: these fleets are small, and the timings below assume no brake. */
const SERVE_FLAGS = ["--brake-min-fleet", "100"];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const between = (low: number, high: number) => low + Math.random() * (high - low);

interface FleetRunner {
  runner: Runner;
  group: string;
  forwarder?: TcpRelay;
  /** Every Welcome, with when it came. */
  welcomes: { at: number; welcome: Welcome }[];
}

/** An SDK runner whose attempts take 100–300 ms; one in twenty fails (and is retried). */
function startRunner(workerId: string, address: string, group: string, handled: Map<string, number>): FleetRunner {
  const runner = new Runner({
    address,
    workerId,
    capacity: 3,
    reconnect: { initialDelayMs: 50, maxDelayMs: 250 },
    collectSnapshot: async () => create(SystemSnapshotSchema),
    logger: silentLogger,
  });
  const entry: FleetRunner = { runner, group, welcomes: [] };
  runner.on("connected", (welcome) => entry.welcomes.push({ at: Date.now(), welcome }));
  void runner
    .run(async (job) => {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, between(100, 300));
        job.signal.addEventListener("abort", () => {
          clearTimeout(timer);
          resolve();
        });
      });
      if (job.signal.aborted) throw new Error("cancelled");
      if (Math.random() < 0.05) throw new Error("flaky rollout");
      handled.set(job.rollout.rolloutId, (handled.get(job.rollout.rolloutId) ?? 0) + 1);
      return { by: workerId };
    })
    .catch(() => undefined);
  return entry;
}

/**
 * Enqueues `ids` in batches through the live replicas in turn. Ids are the
 * client's, so a batch whose answer was lost (its replica died, the database
 * went away) is sent again, through the next replica, safely.
 */
function enqueueAll(ids: string[], live: () => Replica[], options: { batch: number; pauseMs: [number, number]; giveUpMs: number }) {
  const acknowledged = new Set<string>();
  let failures = 0;
  let turn = 0;
  let lastError: unknown;
  const done = (async () => {
    for (let start = 0; start < ids.length; start += options.batch) {
      const batch = ids.slice(start, start + options.batch);
      const requests = batch.map((rolloutId) =>
        create(EnqueueRolloutRequestSchema, {
          rolloutId,
          input: { kind: { case: "stringValue", value: rolloutId } },
          config: { maxAttempts: MAX_ATTEMPTS, retryOn: RETRY_ON, unresponsiveTimeout: durationFromMs(UNRESPONSIVE_MS) },
        }),
      );
      const giveUpAt = Date.now() + options.giveUpMs;
      for (;;) {
        const replicas = live();
        if (replicas.length === 0 || Date.now() > giveUpAt) {
          throw new Error(`enqueue of ${batch[0]}… given up: ${replicas.length === 0 ? "no replica alive" : String(lastError)}`);
        }
        const via = replicas[turn++ % replicas.length]!;
        let answered: string[];
        try {
          answered = (await via.clients.rollouts.enqueueRollouts({ requests }, { timeoutMs: 3_000 })).rollouts.map((r) => r.rolloutId);
        } catch (error) {
          lastError = error;
          failures++;
          await sleep(100);
          continue;
        }
        expect(answered).toEqual(batch);
        for (const id of batch) acknowledged.add(id);
        break;
      }
      await sleep(between(...options.pauseMs));
    }
  })();
  // Awaited by the case that started it; never an unhandled rejection if that case failed first.
  done.catch(() => undefined);
  return { acknowledged, failures: () => failures, done };
}

async function allRollouts(clients: RunnerlineClients, idContains: string): Promise<Rollout[]> {
  const rollouts: Rollout[] = [];
  let pageToken = "";
  do {
    const page = await clients.rollouts.listRollouts({ pageSize: 1_000, pageToken, rolloutIdContains: idContains });
    rollouts.push(...page.rollouts);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return rollouts;
}

async function allAttempts(clients: RunnerlineClients, idContains: string): Promise<Attempt[]> {
  const attempts: Attempt[] = [];
  let pageToken = "";
  do {
    const page = await clients.attempts.listAttempts({ pageSize: 1_000, pageToken, filter: `rollout_id : "${idContains}"` });
    attempts.push(...page.attempts);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return attempts;
}

const count = (clients: RunnerlineClients, idContains: string, statuses: RolloutStatus[]) =>
  clients.rollouts.listRollouts({ rolloutIdContains: idContains, statuses, pageSize: 1 }).then((page) => page.totalSize);

const TERMINAL = [RolloutStatus.SUCCEEDED, RolloutStatus.FAILED, RolloutStatus.CANCELLED];

/**
 * Waits until every rollout whose id contains `prefix` is terminal, then
 * checks the ledger: exactly the acknowledged ones, once each, each within
 * its retry policy, with at most one SUCCEEDED attempt (the latest).
 */
async function checkLedger(what: string, readers: Replica[], prefix: string, acknowledged: Set<string>, expected: number, timeoutMs: number) {
  const [reader] = readers as [Replica];
  let rollouts: Rollout[] = [];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    rollouts = await allRollouts(reader.clients, prefix).catch(() => rollouts);
    if (rollouts.length >= expected && rollouts.every((r) => isRolloutTerminal(r.status))) break;
    if (Date.now() > deadline) break;
    await sleep(200);
  }
  const attempts = await allAttempts(reader.clients, prefix);
  const byRollout = new Map<string, Attempt[]>();
  for (const attempt of attempts) byRollout.set(attempt.rolloutId, [...(byRollout.get(attempt.rolloutId) ?? []), attempt]);
  const tally = <T>(items: T[], key: (item: T) => string) => {
    const counts: Record<string, number> = {};
    for (const item of items) counts[key(item)] = (counts[key(item)] ?? 0) + 1;
    return Object.entries(counts).map(([k, n]) => `${k} ${n}`).join(", ");
  };
  console.log(
    `${what}: rollouts ${acknowledged.size} acknowledged, ${rollouts.length} stored (${tally(rollouts, (r) => RolloutStatus[r.status])}); ` +
      `attempts ${attempts.length} (${tally(attempts, (a) => AttemptStatus[a.status])}), ` +
      `${attempts.filter((a) => a.lateStatus !== AttemptStatus.UNSPECIFIED).length} late reports`,
  );

  const ids = rollouts.map((r) => r.rolloutId);
  expect(acknowledged.size).toBe(expected);
  expect(new Set(ids).size, "no rollout twice").toBe(ids.length);
  expect(new Set(ids)).toEqual(acknowledged);
  const unfinished = rollouts.filter((r) => !isRolloutTerminal(r.status));
  expect(unfinished.map((r) => `${r.rolloutId} ${RolloutStatus[r.status]}`), "rollouts not terminal").toEqual([]);
  for (const rollout of rollouts) {
    const own = byRollout.get(rollout.rolloutId) ?? [];
    const succeeded = own.filter((a) => a.status === AttemptStatus.SUCCEEDED);
    expect(rollout.attemptCount, rollout.rolloutId).toBeLessThanOrEqual(MAX_ATTEMPTS);
    expect(own, `${rollout.rolloutId}'s attempts`).toHaveLength(rollout.attemptCount);
    expect(new Set(own.map((a) => a.sequenceId)).size, rollout.rolloutId).toBe(own.length);
    expect(succeeded.length, `${rollout.rolloutId}: SUCCEEDED attempts`).toBeLessThanOrEqual(1);
    if (rollout.status === RolloutStatus.SUCCEEDED) expect(succeeded.map((a) => a.attemptId)).toEqual([rollout.latestAttemptId]);
    // FAILED only with its attempts used up, or after one that is not retried.
    if (rollout.status === RolloutStatus.FAILED) {
      const last = own.find((a) => a.attemptId === rollout.latestAttemptId);
      const retryable = last !== undefined && RETRY_ON.includes(last.status);
      expect(rollout.attemptCount === MAX_ATTEMPTS || !retryable, `${rollout.rolloutId} FAILED with attempts left`).toBe(true);
    }
  }
  // Every replica still up reads the same rollouts in the same states.
  for (const other of readers.slice(1)) {
    const seen = await allRollouts(other.clients, prefix);
    expect(new Map(seen.map((r) => [r.rolloutId, r.status])), `${other.name} reads what ${reader.name} reads`).toEqual(
      new Map(rollouts.map((r) => [r.rolloutId, r.status])),
    );
  }
}

describe.skipIf(!POSTGRES_AVAILABLE)("a replica killed with SIGKILL under load", () => {
  const BEFORE = 400;
  const AFTER = 100;
  const ids = Array.from({ length: BEFORE + AFTER }, (_, i) => `kill-${i}`);
  const handled = new Map<string, number>();
  let database: string;
  let replicas: Replica[] = [];
  let A: Replica;
  let B: Replica;
  let C: Replica;
  const fleet: FleetRunner[] = [];
  let enqueuing: ReturnType<typeof enqueueAll> | undefined;
  let afterKill: ReturnType<typeof enqueueAll> | undefined;
  let killedAt = 0;
  const heldAtKill = new Map<FleetRunner, string[]>();

  beforeAll(async () => {
    database = await freshDatabase("scaleout_kill");
    replicas = await startReplicas(["A", "B", "C"], database, SERVE_FLAGS);
    [A, B, C] = replicas as [Replica, Replica, Replica];
    // On A: two runners that will find B when A dies, two that cannot reconnect until the test lets them.
    const plan: [string, Replica, string][] = [
      ["a-moving-0", A, "a-moving"],
      ["a-moving-1", A, "a-moving"],
      ["a-held-0", A, "a-held"],
      ["a-held-1", A, "a-held"],
      ["b-0", B, "b"],
      ["b-1", B, "b"],
      ["c-0", C, "c"],
      ["c-1", C, "c"],
    ];
    for (const [workerId, replica, group] of plan) {
      const forwarder = await new TcpRelay({ host: "127.0.0.1", port: replica.port }).start();
      const entry = startRunner(workerId, forwarder.address, group, handled);
      entry.forwarder = forwarder;
      fleet.push(entry);
    }
    await eventually(() => B.clients.workers.listWorkers({}), (page) => page.workers.filter((w) => w.connected).length === plan.length, 30_000);
  });

  afterAll(async () => {
    await Promise.all(fleet.map(({ runner }) => runner.stop()));
    await Promise.all(fleet.map(({ forwarder }) => forwarder?.close()));
    await stopReplicas(replicas);
    if (database !== undefined) await dropDatabase(database, POSTGRES_URL);
  });

  const group = (name: string) => fleet.filter((f) => f.group === name);
  const live = () => replicas.filter(isAlive);

  it("the others notice: the dead replica's workers turn UNKNOWN, their attempts are judged after the unresponsive timeout", async () => {
    enqueuing = enqueueAll(ids.slice(0, BEFORE), live, { batch: 25, pauseMs: [0, 0], giveUpMs: 15_000 });
    await enqueuing.done;
    // Mid-load: work done, work held by A's runners, most of it still to do.
    await eventually(
      async () => ({
        succeeded: await count(B.clients, "kill-", [RolloutStatus.SUCCEEDED]),
        aHolding: fleet.filter((f) => f.group.startsWith("a-") && f.runner.status.heldAttemptIds.length > 0).length,
      }),
      (s) => s.succeeded >= 30 && s.aHolding === 4,
      30_000,
    );
    for (const entry of fleet) heldAtKill.set(entry, entry.runner.status.heldAttemptIds);
    A.process.child.kill("SIGKILL");
    await A.process.exited;
    killedAt = Date.now();
    // A load balancer sends A's moving runners to B; the held ones find nothing to connect to, for now.
    for (const { forwarder } of group("a-moving")) forwarder!.pointAt(B.port);
    for (const { forwarder } of group("a-held")) forwarder!.cut();
    // Load goes on through the survivors.
    afterKill = enqueueAll(ids.slice(BEFORE), live, { batch: 25, pauseMs: [0, 100], giveUpMs: 15_000 });
    const inFlight = enqueuing.acknowledged.size - (await count(B.clients, "kill-", TERMINAL));
    console.log(
      `SIGKILL of A with ${inFlight} of ${enqueuing.acknowledged.size} rollouts unfinished; ` +
        `attempts held by A's runners: ${[...group("a-moving"), ...group("a-held")].map((f) => heldAtKill.get(f)!.length).join("/")}`,
    );

    const held = group("a-held");
    try {
      for (const via of [B, C]) {
        await eventually(
          () => via.clients.workers.listWorkers({ workerIdContains: "a-held-" }).then((page) => page.workers),
          (workers) => workers.length === 2 && workers.every((w) => w.status === WorkerStatus.UNKNOWN && !w.connected),
          Math.max(0, REPLICA_LOSS_BOUND_MS - (Date.now() - killedAt)) + 500,
        );
      }
      console.log(`A's held workers UNKNOWN on B and C ${Date.now() - killedAt} ms after the SIGKILL`);

      // What they ran at the kill and never reported is judged UNRESPONSIVE, after the timeout and not before.
      const attemptIds = held.flatMap((f) => heldAtKill.get(f)!);
      const judged = await eventually(
        () => Promise.all(attemptIds.map((attemptId) => C.clients.attempts.getAttempt({ attemptId }).then((r) => r.attempt!))),
        (attempts) => attempts.every((a) => a.status !== AttemptStatus.PREPARING && a.status !== AttemptStatus.RUNNING),
        REPLICA_LOSS_BOUND_MS + UNRESPONSIVE_MS,
      );
      const unresponsive = judged.filter((a) => a.status === AttemptStatus.UNRESPONSIVE);
      expect(unresponsive.length, "held attempts judged UNRESPONSIVE").toBeGreaterThan(0);
      for (const attempt of unresponsive) {
        const afterMs = timestampMs(attempt.endTime!) - killedAt;
        // Its last sign of life came a heartbeat or so before the kill: judged about UNRESPONSIVE_MS after it, not at once.
        expect(afterMs, `${attempt.attemptId} judged ${afterMs} ms after the kill`).toBeGreaterThanOrEqual(UNRESPONSIVE_MS - 4 * INTERVAL_MS);
      }
      console.log(`held attempts at the kill: ${judged.map((a) => AttemptStatus[a.status]).join(", ")}`);
      // The case was what it says: several hundred rollouts in flight when A died.
      expect(inFlight, "rollouts in flight when A died").toBeGreaterThanOrEqual(200);
    } finally {
      // Either way the held runners come back (to C), so the load can end.
      for (const { forwarder } of held) forwarder!.pointAt(C.port);
    }
  });

  it("the dead replica's runners reconnect to another replica and resume what they held; their reports count", async () => {
    const moving = group("a-moving");
    for (const entry of moving) {
      const again = await eventually(async () => entry.welcomes.find((w) => w.at >= killedAt), (w) => w !== undefined, 10_000).catch(() => undefined);
      expect(again, `${entry.runner.workerId} welcomed again (by B) after the kill`).toBeDefined();
      const welcome = again!.welcome;
      console.log(`${entry.runner.workerId}: welcomed by B ${again!.at - killedAt} ms after the kill, resumed ${welcome.resumedAttemptIds.length}`);
      // Everything it was running at the kill is still its own on B.
      expect([...welcome.resumedAttemptIds].sort(), entry.runner.workerId).toEqual(expect.arrayContaining(heldAtKill.get(entry)!));
    }
    const attemptIds = moving.flatMap((f) => heldAtKill.get(f)!);
    const ended = await eventually(
      () => Promise.all(attemptIds.map((attemptId) => B.clients.attempts.getAttempt({ attemptId }).then((r) => r.attempt!))),
      (attempts) => attempts.every((a) => a.status !== AttemptStatus.PREPARING && a.status !== AttemptStatus.RUNNING),
      10_000,
    );
    // Ended by the runner's own report, not by a verdict, and not as a late report.
    expect(ended.map((a) => `${a.attemptId} ${AttemptStatus[a.status]}`)).toEqual(
      ended.map((a) => `${a.attemptId} ${a.status === AttemptStatus.FAILED ? "FAILED" : "SUCCEEDED"}`),
    );
    expect(ended.filter((a) => a.lateStatus !== AttemptStatus.UNSPECIFIED)).toEqual([]);
  });

  it("every acknowledged rollout exists once and ends within its retry policy, with at most one SUCCEEDED attempt", async () => {
    await enqueuing?.done;
    await afterKill?.done;
    console.log(`enqueue calls that failed and were resent: ${(enqueuing?.failures() ?? 0) + (afterKill?.failures() ?? 0)}`);
    const acknowledged = new Set([...(enqueuing?.acknowledged ?? []), ...(afterKill?.acknowledged ?? [])]);
    await checkLedger("after the SIGKILL of A", [B, C], "kill-", acknowledged, ids.length, 20_000);
  });
});

describe.skipIf(!POSTGRES_AVAILABLE)("PostgreSQL crashed and restarted under load (a private instance)", () => {
  const ROLLOUTS = 300;
  const ids = Array.from({ length: ROLLOUTS }, (_, i) => `pgr-${i}`);
  let database: PrivatePostgres | string = "not started";
  let replicas: Replica[] = [];
  const fleet: FleetRunner[] = [];

  beforeAll(async () => {
    database = await startPrivatePostgres();
    if (typeof database === "string") return;
    // RUNNERLINE_SCALEOUT_ONE_REPLICA=1: one replica stands in for three (a check of the case on a single server).
    replicas =
      process.env.RUNNERLINE_SCALEOUT_ONE_REPLICA === "1"
        ? await startReplicas(["A"], database.url, SERVE_FLAGS).then(([one]) => ["A", "B", "C"].map((name) => ({ ...one!, name })))
        : await startReplicas(["A", "B", "C"], database.url, SERVE_FLAGS);
  });

  afterAll(async () => {
    await Promise.all(fleet.map(({ runner }) => runner.stop()));
    await stopReplicas(replicas);
    if (typeof database !== "string") await database.remove();
  });

  it("the replicas answer UNAVAILABLE while it is down, and lose or duplicate nothing", async (context) => {
    if (typeof database === "string") {
      console.warn(`PostgreSQL restart case skipped: ${database}`);
      context.skip();
      return;
    }
    const pgServer = database;
    const [A, B, C] = replicas as [Replica, Replica, Replica];
    const handled = new Map<string, number>();
    for (const replica of replicas) {
      for (const k of [0, 1]) fleet.push(startRunner(`pg-${replica.name}-${k}`, replica.address, replica.name, handled));
    }
    await eventually(() => B.clients.workers.listWorkers({}), (page) => page.workers.filter((w) => w.connected).length === 6, 30_000);

    const enqueuing = enqueueAll(ids, () => replicas, { batch: 20, pauseMs: [0, 80], giveUpMs: 15_000 });
    await eventually(() => count(C.clients, "pgr-", [RolloutStatus.SUCCEEDED]), (n) => n >= 40, 30_000);
    await pgServer.kill();
    const downAt = Date.now();
    // Down: a call that needs the database is refused with UNAVAILABLE (not hung, not INTERNAL).
    const refused = await eventually(
      () => A.clients.rollouts.listRollouts({ pageSize: 1 }, { timeoutMs: 2_000 }).then(() => undefined, (error: unknown) => ConnectError.from(error)),
      (error) => error !== undefined,
      5_000,
    );
    // A connection reset is how a replica that died looks from here: give its exit time to be seen.
    if (refused!.code !== Code.Unavailable) await Promise.race([A.process.exited, sleep(1_000)]);
    const why = isAlive(A) ? refused!.message : `${refused!.message}; replica A died:\n${A.process.output().slice(-2_000)}`;
    expect(refused!.code, why).toBe(Code.Unavailable);
    await sleep(500);
    await pgServer.start();
    console.log(`PostgreSQL was down for ${Date.now() - downAt} ms, with ${enqueuing.acknowledged.size} rollouts acknowledged`);

    // Every replica rides it out (a moment for an exit to be seen).
    await sleep(500);
    const dead = replicas.filter((r) => !isAlive(r));
    expect(dead.map((r) => r.name), `replicas that died with the database:\n${dead.map((r) => r.process.output().slice(-2_000)).join("\n")}`).toEqual([]);
    await enqueuing.done;
    console.log(`enqueue calls that failed and were resent: ${enqueuing.failures()}`);
    await checkLedger("after the PostgreSQL restart", [A, B, C], "pgr-", enqueuing.acknowledged, ROLLOUTS, 20_000);
  });
});
