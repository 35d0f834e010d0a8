import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { type Attempt, AttemptSchema, AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { type Rollout, RolloutMode, RolloutSchema, RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { WorkerStatus } from "../../src/gen/runnerline/v1/worker_pb.js";
import { toTimestamp } from "../../src/server/domain/time.js";
import { newWorkerRecord, type WorkerRecord } from "../../src/server/domain/worker.js";
import { MemoryTables } from "../../src/server/store/memory-store.js";
import {
  ATTEMPT_SORT_FIELDS,
  type ListQuery,
  type OrderTerm,
  ROLLOUT_SORT_FIELDS,
  WORKER_SORT_FIELDS,
} from "../../src/server/store/query.js";
import { APPLICATION_ID, MIGRATIONS, openDatabase, StoreOpenError } from "../../src/server/store/sqlite-schema.js";
import { SqliteTables } from "../../src/server/store/sqlite-store.js";
import type { Tables } from "../../src/server/store/tables.js";
import { T0 } from "../fixtures.js";
import { tempDatabasePath } from "../harness.js";

const root = fileURLToPath(new URL("../..", import.meta.url));
const tsx = `${root}node_modules/.bin/tsx`;

const rollout = (id: string, fields: MessageInitShape<typeof RolloutSchema> = {}): Rollout =>
  create(RolloutSchema, { rolloutId: id, status: RolloutStatus.QUEUING, createTime: toTimestamp(T0), version: 1n, ...fields });

const attempt = (id: string, fields: MessageInitShape<typeof AttemptSchema> = {}): Attempt =>
  create(AttemptSchema, { attemptId: id, rolloutId: "ro-1", workerId: "w-1", sequenceId: 1, status: AttemptStatus.RUNNING, version: 1n, ...fields });

const queued = (store: Tables): string[] => store.queuedRolloutIds();

function openError(path: string): StoreOpenError {
  try {
    SqliteTables.open(path).close();
  } catch (error) {
    expect(error).toBeInstanceOf(StoreOpenError);
    return error as StoreOpenError;
  }
  throw new Error(`opening ${path} succeeded`);
}

describe("SQLite store: reopening", () => {
  it("keeps rollouts, attempts, workers with their facts, and the queue in its order", async () => {
    const path = tempDatabasePath();
    const first = SqliteTables.open(path);
    for (const id of ["ro-a", "ro-b", "ro-c", "ro-d"]) {
      first.putRollout(rollout(id, { input: { kind: { case: "stringValue", value: id } } }));
      first.pushQueue(id);
    }
    first.pushQueue("ro-a"); // moves to the back
    first.removeFromQueue("ro-c");
    first.putAttempt(attempt("at-1", { metadata: { step: 3 } }));
    const worker: WorkerRecord = {
      ...newWorkerRecord("w-1", T0),
      attachment: "lost",
      suspect: true,
    };
    worker.worker.labels = { gpu: "h100" };
    first.putWorker(worker);
    await first.commit();
    await first.close();

    const second = SqliteTables.open(path);
    expect(second.getRollout("ro-b")?.input?.kind).toEqual({ case: "stringValue", value: "ro-b" });
    expect(second.getAttempt("at-1")).toMatchObject({ status: AttemptStatus.RUNNING, metadata: { step: 3 } });
    expect(second.getWorker("w-1")).toMatchObject({ attachment: "lost", suspect: true, worker: { labels: { gpu: "h100" } } });
    expect(second.activeAttempts().map((a) => a.attemptId)).toEqual(["at-1"]);
    expect(second.queueLength()).toBe(3);
    expect(queued(second)).toEqual(["ro-b", "ro-d", "ro-a"]);
    // Later pushes go behind everything pushed before the restart.
    second.pushQueue("ro-c");
    second.pushQueue("ro-b");
    await second.close();
    const third = SqliteTables.open(path);
    expect(queued(third)).toEqual(["ro-d", "ro-a", "ro-c", "ro-b"]);
    await third.close();
  });

  it("a second server on the same file is refused while the first holds it", async () => {
    const path = tempDatabasePath();
    const first = SqliteTables.open(path);
    expect(openError(path).message).toMatch(/in use by another process/);
    await first.close();
    SqliteTables.open(path).close();
  });
});

describe("SQLite store: durability", () => {
  it("commit() resolves at once when nothing is pending, and after the COMMIT of the turn otherwise", async () => {
    const store = SqliteTables.open(tempDatabasePath());
    await store.commit();
    store.putRollout(rollout("ro-1"));
    let committed = false;
    const done = store.commit().then(() => (committed = true));
    store.putRollout(rollout("ro-2")); // same turn, same transaction
    await Promise.resolve();
    expect(committed).toBe(false);
    await done;
    expect(store.getRollout("ro-2")).toBeDefined();
    await store.close();
  });

  it("a heartbeat (same version) is written behind: readable at once, not waited for, written within the flush interval", async () => {
    const path = tempDatabasePath();
    const store = SqliteTables.open(path, { telemetryFlushMs: 20 });
    const record = newWorkerRecord("w-1", T0);
    store.putWorker(record);
    await store.commit();
    const beat = { ...record, worker: { ...record.worker, lastHeartbeatTime: toTimestamp(T0 + 5), extraStats: { cpu: 1 } } };
    store.putWorker(beat, record);
    expect(store.getWorker("w-1")?.worker.extraStats).toEqual({ cpu: 1 });
    // Nothing to wait for: the heartbeat is telemetry.
    let resolved = false;
    void store.commit().then(() => (resolved = true));
    await Promise.resolve();
    expect(resolved).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 60));
    await store.commit();
    await store.close();
    expect(SqliteTables.open(path).getWorker("w-1")?.worker.extraStats).toEqual({ cpu: 1 });
  });

  it("checkpoints what was committed into the database file on a timer (the NORMAL power-loss bound)", async () => {
    const path = tempDatabasePath();
    const store = SqliteTables.open(path, { checkpointMs: 50 });
    const before = statSync(path).size;
    for (let i = 0; i < 200; i++) store.putRollout(rollout(`ro-${i}`, { input: { kind: { case: "stringValue", value: "x".repeat(500) } } }));
    await store.commit();
    // Committed into the WAL only, until the timer's checkpoint copies (and fsyncs) it into the file.
    expect(statSync(path).size).toBe(before);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(statSync(path).size).toBeGreaterThan(before + 100_000);
    await store.close();
  });

  it("what commit() confirmed survives SIGKILL; held-back telemetry is the only loss", async () => {
    const path = tempDatabasePath();
    // node itself (not the tsx launcher, which would run it in a grandchild) so that SIGKILL hits the writer.
    const child = spawn(process.execPath, ["--import", "tsx", `${root}test/store/fixtures/write-then-die.ts`, path], {
      cwd: root,
      stdio: ["ignore", "pipe", "inherit"],
    });
    let output = "";
    child.stdout.setEncoding("utf8");
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (chunk: string) => {
        output += chunk;
        if (output.includes("committed")) resolve();
      });
      child.once("exit", (code) => reject(new Error(`child exited early with ${code}`)));
    });
    child.kill("SIGKILL");
    await once(child, "exit");
    const store = SqliteTables.open(path);
    expect(store.queueLength()).toBe(100);
    expect(queued(store)).toEqual(Array.from({ length: 100 }, (_, i) => `ro-${i}`));
    const worker = store.getWorker("w-1");
    expect(worker).toBeDefined();
    expect(worker?.worker.lastHeartbeatTime).toBeUndefined(); // the heartbeat was held back and lost
    await store.close();
  }, 30_000);
});

describe("SQLite store: files it refuses, clearly", () => {
  it("a file that is not SQLite", () => {
    const path = tempDatabasePath();
    writeFileSync(path, "this is a text file, not a database\n".repeat(200));
    expect(openError(path).message).toMatch(/is not a SQLite database/);
    expect(readFileSync(path, "utf8")).toMatch(/^this is a text file/); // left untouched
  });

  it("a Runnerline database whose pages are damaged", async () => {
    const path = tempDatabasePath();
    const store = SqliteTables.open(path);
    for (let i = 0; i < 2_000; i++) store.putRollout(rollout(`ro-${i}`, { resourcesId: "x".repeat(200) }));
    await store.commit();
    await store.close();
    const bytes = readFileSync(path);
    // Scribble over the middle of the file, keeping the header intact.
    for (let i = bytes.length / 2; i < bytes.length / 2 + 8_192; i++) bytes[i] = 0xa5;
    writeFileSync(path, bytes);
    expect(openError(path).message).toMatch(/corrupt/);
  });

  it("a truncated database", async () => {
    const path = tempDatabasePath();
    const store = SqliteTables.open(path);
    for (let i = 0; i < 2_000; i++) store.putRollout(rollout(`ro-${i}`, { resourcesId: "x".repeat(200) }));
    await store.commit();
    await store.close();
    truncateSync(path, 50_000);
    expect(openError(path).message).toMatch(/corrupt|not a SQLite database/);
  });

  it("a SQLite database of something else", () => {
    const path = tempDatabasePath();
    const db = new Database(path);
    db.exec("CREATE TABLE users (name TEXT)");
    db.close();
    expect(openError(path).message).toMatch(/not a Runnerline one \(it has tables users/);

    const other = tempDatabasePath();
    const tagged = new Database(other);
    tagged.pragma("application_id = 1234");
    tagged.close();
    expect(openError(other).message).toMatch(/not a Runnerline one \(application_id 0x4d2\)/);
  });

  it("a Runnerline database written by a newer version", async () => {
    const path = tempDatabasePath();
    await SqliteTables.open(path).close();
    const db = new Database(path);
    db.pragma(`user_version = ${MIGRATIONS.length + 1}`);
    db.close();
    expect(openError(path).message).toMatch(
      new RegExp(`schema version ${MIGRATIONS.length + 1}, newer than this runnerline understands \\(${MIGRATIONS.length}\\)`),
    );
  });
});

describe("SQLite store: schema versions", () => {
  it("a new file gets the application id and the latest schema version", async () => {
    const path = tempDatabasePath();
    await SqliteTables.open(path).close();
    const db = new Database(path, { readonly: true });
    expect(db.pragma("application_id", { simple: true })).toBe(APPLICATION_ID);
    expect(db.pragma("user_version", { simple: true })).toBe(MIGRATIONS.length);
    expect(db.pragma("journal_mode", { simple: true })).toBe("wal");
    db.close();
  });

  it("opening runs the forward migrations a file lacks, keeping its data", async () => {
    const path = tempDatabasePath();
    // A version-1 file, as the first release wrote it.
    const v1 = openDatabase(path, { migrations: MIGRATIONS.slice(0, 1) });
    v1.prepare("INSERT INTO rollouts (rollout_id, status, mode, attempt_count, version, message) VALUES (?, 1, 0, 0, 1, ?)").run(
      "ro-kept",
      toBinary(RolloutSchema, rollout("ro-kept")),
    );
    v1.prepare("INSERT INTO queue (rollout_id) VALUES (?)").run("ro-kept");
    v1.close();

    const next = [...MIGRATIONS, "ALTER TABLE rollouts ADD COLUMN migrated_in_test INTEGER NOT NULL DEFAULT 7"];
    const v2 = SqliteTables.open(path, { migrations: next });
    expect(v2.getRollout("ro-kept")).toBeDefined();
    expect(v2.queuedRolloutIds()).toEqual(["ro-kept"]);
    await v2.close();
    const db = new Database(path, { readonly: true });
    expect(db.pragma("user_version", { simple: true })).toBe(MIGRATIONS.length + 1);
    expect(db.prepare("SELECT migrated_in_test, priority FROM rollouts").get()).toEqual({ migrated_in_test: 7, priority: 0 });
    db.close();
  });

  it("every sort field of the list catalogs is a column", async () => {
    const path = tempDatabasePath();
    await SqliteTables.open(path).close();
    const db = new Database(path, { readonly: true });
    const columns = (table: string) => db.prepare(`SELECT name FROM pragma_table_info('${table}')`).pluck().all();
    expect(columns("rollouts")).toEqual(expect.arrayContaining(Object.keys(ROLLOUT_SORT_FIELDS)));
    expect(columns("attempts")).toEqual(expect.arrayContaining(Object.keys(ATTEMPT_SORT_FIELDS)));
    expect(columns("workers")).toEqual(expect.arrayContaining(Object.keys(WORKER_SORT_FIELDS)));
    db.close();
  });
});

describe("SQLite store: lists", () => {
  // A small deterministic generator, so a failure can be replayed.
  function random(seed: number) {
    let state = seed >>> 0;
    const next = () => {
      state = (state * 1664525 + 1013904223) >>> 0;
      return state / 2 ** 32;
    };
    return {
      int: (n: number) => Math.floor(next() * n),
      pick: <T>(items: readonly T[]) => items[Math.floor(next() * items.length)]!,
      chance: (p: number) => next() < p,
    };
  }

  it("pages exactly as the memory store does: filters, null times, directions, ties, offsets", async () => {
    const rnd = random(42);
    const memory = new MemoryTables();
    const sqlite = SqliteTables.open(tempDatabasePath());
    const time = () => (rnd.chance(0.3) ? undefined : toTimestamp(T0 + rnd.int(5) * 1000));
    const both = (put: (store: Tables) => void) => {
      put(memory);
      put(sqlite);
    };
    const rolloutStatuses = [RolloutStatus.QUEUING, RolloutStatus.RUNNING, RolloutStatus.SUCCEEDED, RolloutStatus.FAILED];
    const attemptStatuses = [AttemptStatus.PREPARING, AttemptStatus.RUNNING, AttemptStatus.SUCCEEDED, AttemptStatus.FAILED];
    const workerStatuses = [WorkerStatus.IDLE, WorkerStatus.BUSY, WorkerStatus.UNKNOWN, WorkerStatus.OFFLINE];
    for (let i = 0; i < 120; i++) {
      const r = rollout(`ro-${rnd.int(80)}`, {
        status: rnd.pick(rolloutStatuses),
        mode: rnd.pick([RolloutMode.UNSPECIFIED, RolloutMode.TRAIN, RolloutMode.VAL]),
        createTime: time(),
        startTime: time(),
        endTime: time(),
        attemptCount: rnd.int(3),
      });
      both((s) => s.putRollout(r));
      const a = attempt(`at-${rnd.int(80)}`, {
        rolloutId: `ro-${rnd.int(5)}`,
        workerId: `w-${rnd.int(4)}`,
        sequenceId: rnd.int(3),
        status: rnd.pick(attemptStatuses),
        createTime: time(),
        startTime: time(),
        endTime: time(),
        lastHeartbeatTime: time(),
        version: BigInt(i + 1),
      });
      both((s) => s.putAttempt(a));
      const base = newWorkerRecord(`w-${rnd.int(30)}`, T0 + rnd.int(5) * 1000);
      const w: WorkerRecord = {
        ...base,
        worker: {
          ...base.worker,
          status: rnd.pick(workerStatuses),
          capacity: rnd.int(3),
          labels: rnd.chance(0.5) ? { zone: rnd.pick(["a", "b"]) } : {},
          lastHeartbeatTime: time(),
          lastDequeueTime: time(),
          lastBusyTime: time(),
          lastIdleTime: time(),
          connectTime: time(),
          version: BigInt(i + 1),
        },
      };
      both((s) => s.putWorker(w));
    }
    await sqlite.commit();

    const orderOf = (fields: string[], id: string): OrderTerm[] => {
      const terms = Array.from({ length: rnd.int(3) }, () => ({ field: rnd.pick(fields), descending: rnd.chance(0.5) }));
      if (rnd.chance(0.8)) terms.push({ field: id, descending: rnd.chance(0.3) });
      return terms;
    };
    const paging = () => ({ offset: rnd.pick([0, 0, 3, 10, 200]), limit: rnd.pick([1, 5, 50, Number.MAX_SAFE_INTEGER]) });
    const subset = <T>(items: T[]) => items.filter(() => rnd.chance(0.3));
    let compared = 0;
    for (let i = 0; i < 300; i++) {
      const rq: ListQuery<Parameters<Tables["listRollouts"]>[0]["filter"]> = {
        filter: { statuses: subset(rolloutStatuses), idContains: rnd.pick(["", "", "1", "ro-7"]) },
        orderBy: orderOf(Object.keys(ROLLOUT_SORT_FIELDS), "rollout_id"),
        ...paging(),
      };
      const ids = (page: { items: { rolloutId: string }[]; total: number }) => [page.total, page.items.map((r) => r.rolloutId)];
      expect(ids(sqlite.listRollouts(rq)), JSON.stringify(rq)).toEqual(ids(memory.listRollouts(rq)));

      const aq = {
        filter: { rolloutId: rnd.pick(["", "ro-1"]), workerId: rnd.pick(["", "w-2"]), statuses: subset(attemptStatuses) },
        orderBy: orderOf(Object.keys(ATTEMPT_SORT_FIELDS), "attempt_id"),
        ...paging(),
      };
      const aids = (page: { items: { attemptId: string }[]; total: number }) => [page.total, page.items.map((a) => a.attemptId)];
      expect(aids(sqlite.listAttempts(aq)), JSON.stringify(aq)).toEqual(aids(memory.listAttempts(aq)));

      const wq = {
        filter: {
          statuses: subset(workerStatuses),
          idContains: rnd.pick(["", "", "2"]),
          labels: rnd.pick<Record<string, string>>([{}, {}, { zone: "a" }, { zone: "b", gpu: "x" }]),
        },
        orderBy: orderOf(Object.keys(WORKER_SORT_FIELDS), "worker_id"),
        ...paging(),
      };
      const wids = (page: { items: { workerId: string }[]; total: number }) => [page.total, page.items.map((w) => w.workerId)];
      expect(wids(sqlite.listWorkers(wq)), JSON.stringify(wq)).toEqual(wids(memory.listWorkers(wq)));
      compared += 3;
    }
    expect(compared).toBe(900);
    expect(sqlite.activeAttempts().map((a) => a.attemptId).sort()).toEqual(memory.activeAttempts().map((a) => a.attemptId).sort());
    await sqlite.close();
  });
});

describe("serve on a file it refuses", () => {
  it("exits non-zero with the reason and never listens", async () => {
    const path = tempDatabasePath();
    writeFileSync(path, "garbage ".repeat(1_000));
    const child = spawn(
      tsx,
      [`${root}src/cli/main.ts`, "serve", "--store", `sqlite:${path}`, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"],
      { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUNNERLINE_STORE: "" } },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    const [code] = (await once(child, "exit")) as [number | null];
    expect(code).not.toBe(0);
    expect(code).not.toBeNull();
    expect(stderr).toMatch(new RegExp(`${path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} is not a SQLite database`));
    expect(stdout).not.toMatch(/serving/);
  }, 30_000);
});

describe("the folder of a SQLite store", () => {
  /** `runnerline serve` with `args` in `cwd`, until it exits or prints "serving" (then SIGTERM). */
  async function serve(args: string[], cwd = root) {
    const child = spawn(tsx, [`${root}src/cli/main.ts`, "serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", ...args], {
      cwd,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, RUNNERLINE_STORE: "" },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      stdout += chunk;
      if (stdout.includes("serving")) child.kill("SIGTERM");
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    const [code] = (await once(child, "exit")) as [number | null];
    return { code, stdout, stderr };
  }

  it("refuses an explicit path whose folder is missing, in one line, and creates nothing", async () => {
    const missing = join(dirname(tempDatabasePath()), "no-such-folder");
    const { code, stdout, stderr } = await serve(["--store", `sqlite:${missing}/x.db`]);
    expect(code).toBe(1);
    expect(stderr).toBe(
      `runnerline: cannot open ${missing}/x.db: ${missing} does not exist; create the folder first, or point --store (RUNNERLINE_STORE) at a file in an existing one\n`,
    );
    expect(stdout).not.toMatch(/serving/);
    expect(existsSync(missing)).toBe(false);
  }, 30_000);

  it("creates the default ./data when it is missing", async () => {
    const cwd = mkdtempSync(join(tmpdir(), "runnerline-default-store-"));
    try {
      const { stdout } = await serve([], cwd);
      expect(stdout).toMatch(/store sqlite:\.\/data\/runnerline\.db/);
      expect(existsSync(join(cwd, "data", "runnerline.db"))).toBe(true);
    } finally {
      rmSync(cwd, { recursive: true, force: true });
    }
  }, 30_000);

  it("openDatabase refuses a missing folder, or a file where the folder should be, unless told to create it", () => {
    const base = dirname(tempDatabasePath());
    expect(() => openDatabase(join(base, "absent", "x.db"))).toThrow(StoreOpenError);
    expect(existsSync(join(base, "absent"))).toBe(false);
    const file = tempDatabasePath("plain-file");
    writeFileSync(file, "");
    expect(() => openDatabase(join(file, "x.db"))).toThrow(/is not a folder/);
    const db = openDatabase(join(base, "created", "nested", "x.db"), { createFolder: true });
    db.close();
    expect(existsSync(join(base, "created", "nested", "x.db"))).toBe(true);
  });
});
