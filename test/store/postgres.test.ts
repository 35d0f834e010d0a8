import { create } from "@bufbuild/protobuf";
import pg from "pg";
import { afterAll, describe, expect, it, vi } from "vitest";
import { EnqueueRolloutRequestSchema, RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { newAttemptId } from "../../src/server/domain/ids.js";
import { newRollout } from "../../src/server/domain/rollout.js";
import { attachSession, newWorkerRecord, recordHeartbeat } from "../../src/server/domain/worker.js";
import { PG_MIGRATIONS } from "../../src/server/store/postgres-schema.js";
import { PostgresStore } from "../../src/server/store/postgres-store.js";
import { StoreOpenError } from "../../src/server/store/sqlite-schema.js";
import { T0 } from "../fixtures.js";
import { LIVENESS, OPENING } from "../harness.js";
import { TcpRelay } from "../tcp-relay.js";
import { freshSchema, POSTGRES_AVAILABLE, POSTGRES_URL, postgresStore } from "../postgres.js";

const context = { now: T0, liveness: { heartbeatGraceMs: LIVENESS.heartbeatGraceMs } };
const queued = (id: string) => newRollout(create(EnqueueRolloutRequestSchema, {}), id, T0);

/** The statements this process sends while `body` runs (every one goes through pg.Client#query: the pools' clients are pg.Clients). */
async function statementsSent<T>(body: () => Promise<T>): Promise<{ statements: string[]; result: T }> {
  const statements: string[] = [];
  const realQuery = pg.Client.prototype.query;
  const counting = vi.spyOn(pg.Client.prototype, "query").mockImplementation(function (this: pg.Client, ...args: unknown[]) {
    const first = args[0];
    statements.push(typeof first === "string" ? first : (first as { text: string }).text);
    return (realQuery as (...a: unknown[]) => unknown).apply(this, args) as never;
  });
  try {
    return { statements, result: await body() };
  } finally {
    counting.mockRestore();
  }
}

async function admin<T>(body: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  await client.connect();
  try {
    return await body(client);
  } finally {
    await client.end();
  }
}

describe.skipIf(!POSTGRES_AVAILABLE)("PostgreSQL store", () => {
  const stores: PostgresStore[] = [];
  afterAll(async () => {
    await Promise.all(stores.map((store) => store.close().catch(() => undefined)));
  });

  it("refuses, with the reason, a database it cannot reach, one that is not Runnerline's, and a newer schema", async () => {
    await expect(PostgresStore.open("postgres://postgres@127.0.0.1:1/test")).rejects.toThrow(/cannot open the store postgres:\/\/postgres@127\.0\.0\.1:1\/test/);
    const foreign = freshSchema("foreign");
    await admin(async (client) => {
      await client.query(`CREATE SCHEMA ${foreign}`);
      await client.query(`CREATE TABLE ${foreign}.orders (id integer)`);
    });
    const notOurs = await PostgresStore.open(POSTGRES_URL, { schema: foreign }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(notOurs).toBeInstanceOf(StoreOpenError);
    expect(String(notOurs)).toMatch(/already has tables \(orders\) but no Runnerline schema/);
    const newer = freshSchema("newer");
    stores.push(await PostgresStore.open(POSTGRES_URL, { schema: newer }));
    await admin((client) => client.query(`UPDATE ${newer}.runnerline_schema SET version = ${PG_MIGRATIONS.length + 1}`));
    await expect(PostgresStore.open(POSTGRES_URL, { schema: newer })).rejects.toThrow(
      new RegExp(`schema version ${PG_MIGRATIONS.length + 1}, newer than this runnerline understands \\(${PG_MIGRATIONS.length}\\)`),
    );
  });

  it("servers starting together on one empty database create the schema once", async () => {
    const schema = freshSchema("together");
    const opened = await Promise.all([1, 2, 3].map(() => PostgresStore.open(POSTGRES_URL, { schema, poolSize: 2 })));
    stores.push(...opened);
    await opened[0]!.enqueueRollouts([queued("ro-a")]);
    expect((await opened[2]!.getRollout("ro-a"))?.status).toBe(RolloutStatus.QUEUING);
  });

  it("two servers claiming the same rollouts at once dispatch each exactly once", async () => {
    const schema = freshSchema("race");
    const one = await PostgresStore.open(POSTGRES_URL, { schema, poolSize: 4 });
    const two = await PostgresStore.open(POSTGRES_URL, { schema, poolSize: 4 });
    stores.push(one, two);
    const ids = Array.from({ length: 40 }, (_, i) => `ro-${i}`);
    await one.enqueueRollouts(ids.map(queued));
    const epochOf = async (store: PostgresStore, workerId: string) =>
      (await store.changeWorker(workerId, undefined, (r) => attachSession(r ?? newWorkerRecord(workerId, T0), OPENING, context.liveness, T0)))
        .workers[0]!.after.epoch;
    const claimants = [
      { store: one, workerId: "w-1", epoch: await epochOf(one, "w-1") },
      { store: two, workerId: "w-2", epoch: await epochOf(two, "w-2") },
    ];
    const results = await Promise.all(
      claimants.flatMap(({ store, workerId, epoch }) =>
        [0, 1, 2, 3].map(() => store.claimRollouts({ ...context, workerId, epoch, rolloutIds: ids, newAttemptId })),
      ),
    );
    const claimed = results.flatMap((r) => r.claimed.map((c) => c.rollout.rolloutId));
    expect(claimed.sort()).toEqual([...ids].sort());
    expect(await one.queueLength()).toBe(0);
  });

  it("answers UNAVAILABLE while the database is out of reach, and works again when it is back, losing nothing", async () => {
    const database = new URL(POSTGRES_URL);
    const relay = await new TcpRelay({ host: database.hostname, port: Number(database.port || 5432) }).start();
    const throughRelay = new URL(POSTGRES_URL);
    throughRelay.host = relay.address;
    const schema = freshSchema("outage");
    const store = await PostgresStore.open(throughRelay.toString(), { schema, poolSize: 2 });
    stores.push(store);
    await store.enqueueRollouts([queued("ro-before")]);
    relay.cut();
    await expect(store.enqueueRollouts([queued("ro-during")])).rejects.toMatchObject({ kind: "unavailable" });
    await expect(store.getRollout("ro-before")).rejects.toMatchObject({ kind: "unavailable" });
    relay.restore();
    await store.enqueueRollouts([queued("ro-after")]);
    expect((await store.queuedRollouts()).map((r) => r.rolloutId)).toEqual(["ro-before", "ro-after"]);
    await relay.close();
  });

  it("heartbeats are written behind in batches: no transaction each, readable at once, in the database within the flush interval", async () => {
    const schema = freshSchema("beats");
    let transactions = 0;
    const store = await PostgresStore.open(POSTGRES_URL, { schema, telemetryFlushMs: 100, onCommit: () => transactions++ });
    stores.push(store);
    await store.changeWorker("w-1", undefined, (r) => attachSession(r ?? newWorkerRecord("w-1", T0), OPENING, context.liveness, T0));
    const before = transactions;
    for (let beat = 1; beat <= 50; beat++) {
      await store.changeWorker("w-1", { workerId: "w-1", epoch: 1 }, (r) =>
        recordHeartbeat(r!, { extraStats: { beat } }, context.liveness, T0 + beat),
      );
    }
    expect(transactions - before).toBe(0);
    expect((await store.getWorker("w-1"))?.worker.extraStats).toEqual({ beat: 50 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(transactions - before).toBe(1);
    const other = await PostgresStore.open(POSTGRES_URL, { schema });
    stores.push(other);
    expect((await other.getWorker("w-1"))?.worker.extraStats).toEqual({ beat: 50 });
    expect((await other.getWorker("w-1"))?.worker.status).toBe((await store.getWorker("w-1"))?.worker.status);
  });

  it("a telemetry flush locks its workers by id, as turns do, so the two never deadlock", async () => {
    const schema = freshSchema("flushlock");
    const store = await PostgresStore.open(POSTGRES_URL, { schema, telemetryFlushMs: 60_000 });
    stores.push(store);
    // Created w-b first: a statement that follows the table's physical order meets w-b before w-a.
    for (const id of ["w-b", "w-a"]) {
      await store.changeWorker(id, undefined, (r) => attachSession(r ?? newWorkerRecord(id, T0), OPENING, context.liveness, T0));
    }
    // Telemetry held back for w-b, then w-a: out of id order.
    for (const id of ["w-b", "w-a"]) {
      await store.changeWorker(id, { workerId: id, epoch: 1 }, (r) => recordHeartbeat(r!, { extraStats: { beat: 1 } }, context.liveness, T0 + 1));
    }
    const holder = new pg.Client({ connectionString: POSTGRES_URL, options: `-c search_path=${schema}` });
    const prober = new pg.Client({ connectionString: POSTGRES_URL, options: `-c search_path=${schema}` });
    await holder.connect();
    await prober.connect();
    try {
      // A turn holding w-a, as a transaction of the store's would.
      await holder.query("BEGIN");
      await holder.query("SELECT 1 FROM workers WHERE worker_id = 'w-a' FOR UPDATE");
      const flushed = store.flushTelemetry();
      await new Promise((resolve) => setTimeout(resolve, 300));
      // The flush waits for w-a before it takes w-b, so the turn can still take w-b: no cycle.
      await expect(prober.query("SELECT 1 FROM workers WHERE worker_id = 'w-b' FOR UPDATE NOWAIT")).resolves.toBeDefined();
      await holder.query("COMMIT");
      await flushed;
      expect((await store.getWorker("w-b"))?.worker.extraStats).toEqual({ beat: 1 });
    } finally {
      await holder.end();
      await prober.end();
    }
  });

  it("enqueues a batch of 1,000 as one statement: no BEGIN/COMMIT, one round trip, every row in the batch's queue order", async () => {
    const store = await postgresStore();
    stores.push(store);
    await store.enqueueRollouts([queued("ro-warm")]); // the pool's connection is open before counting
    const ids = Array.from({ length: 1000 }, (_, i) => `ro-${String(1000 - i).padStart(4, "0")}`); // not in id order
    const { statements: sent, result: changes } = await statementsSent(() => store.enqueueRollouts(ids.map(queued)));
    expect(sent.map((text) => text.split(" ")[0])).toEqual(["INSERT"]);
    expect(changes.rollouts.map((c) => c.after.rolloutId)).toEqual(ids);
    expect(await store.queuedRolloutIds()).toEqual(["ro-warm", ...ids]);
    expect((await store.getRollout("ro-0500"))?.status).toBe(RolloutStatus.QUEUING);
  });

  it("reads of rollouts asked for in one turn (an enqueue's idempotency checks) are one statement, each answered alone", async () => {
    const store = await postgresStore();
    stores.push(store);
    await store.enqueueRollouts(["ro-a", "ro-b"].map(queued));
    const ids = ["ro-a", ...Array.from({ length: 998 }, (_, i) => `ro-missing-${i}`), "ro-b", "ro-a"];
    const sent = await statementsSent(() => Promise.all(ids.map((id) => store.getRollout(id))));
    expect(sent.statements).toHaveLength(1);
    expect(sent.result.map((r) => r?.rolloutId)).toEqual(["ro-a", ...Array.from({ length: 998 }, () => undefined), "ro-b", "ro-a"]);
    await expect(store.getRollout("ro-b")).resolves.toMatchObject({ rolloutId: "ro-b" });
  });

  it("a batch with an id already taken is refused whole with ALREADY_EXISTS, and the queue is as it was", async () => {
    const store = await postgresStore();
    stores.push(store);
    await store.enqueueRollouts([queued("ro-taken")]);
    const refused = await store.enqueueRollouts([queued("ro-new-1"), queued("ro-taken"), queued("ro-new-2")]).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(refused).toMatchObject({ kind: "already_exists" });
    expect(String((refused as Error).message)).toMatch(/ro-taken/);
    expect(await store.queuedRolloutIds()).toEqual(["ro-taken"]);
    expect(await store.getRollouts(["ro-new-1", "ro-new-2"])).toEqual([]);
  });

  it("a store of its own per test: postgresStore() never shares rows", async () => {
    const a = await postgresStore();
    const b = await postgresStore();
    stores.push(a, b);
    await a.enqueueRollouts([queued("ro-x")]);
    expect(await b.getRollout("ro-x")).toBeUndefined();
  });
});
