import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { SessionResponse } from "../src/gen/runnerline/v1/runner_pb.js";
import { Coordinator } from "../src/server/dispatch/coordinator.js";
import { type Replacement, replacementMessage, type SessionLink } from "../src/server/dispatch/session-link.js";
import type { DomainErrorKind } from "../src/server/domain/errors.js";
import type { Clock } from "../src/server/domain/time.js";
import { MemoryStore } from "../src/server/store/memory-store.js";
import { SqliteStore } from "../src/server/store/sqlite-store.js";
import type { Store } from "../src/server/store/store.js";
import { T0 } from "./fixtures.js";
import { POSTGRES_AVAILABLE, postgresStore } from "./postgres.js";

export class ManualClock implements Clock {
  constructor(private time = T0) {}
  now() {
    return this.time;
  }
  advance(ms: number) {
    this.time += ms;
  }
}

/** Stores the conformance suite runs against; each entry makes a fresh, empty store. */
export const STORES: [string, () => Promise<Store>][] = [
  ["memory", async () => new MemoryStore()],
  ["sqlite", async () => SqliteStore.open(tempDatabasePath())],
  // Every read goes to SQL and decodes: the cache must never be what makes a test pass.
  ["sqlite without read cache", async () => SqliteStore.open(tempDatabasePath(), { cacheSize: 0 })],
  // Left out, with one line saying so, where no PostgreSQL answers (test/postgres.ts).
  ...(POSTGRES_AVAILABLE ? [["postgres", () => postgresStore()] as [string, () => Promise<Store>]] : []),
];

let tempFolder: string | undefined;
let tempCount = 0;

/** A new database file in a folder removed when the test process exits. */
export function tempDatabasePath(name = `store-${++tempCount}.db`): string {
  if (tempFolder === undefined) {
    const folder = mkdtempSync(join(tmpdir(), "runnerline-test-"));
    process.once("exit", () => rmSync(folder, { recursive: true, force: true }));
    tempFolder = folder;
  }
  return join(tempFolder, name);
}

export const LIVENESS = { heartbeatIntervalMs: 1_000, heartbeatGraceMs: 3_000, defaultUnresponsiveMs: 3_000 };

export function coordinatorOn(store: Store, clock = new ManualClock()) {
  return { clock, store, coordinator: new Coordinator({ store, clock, ...LIVENESS }) };
}

/** A session as the coordinator sees it, recording what it was sent. */
export class RecordingLink implements SessionLink {
  credits = 0;
  leaving = false;
  readonly sent: SessionResponse[] = [];
  closedWith: { kind: DomainErrorKind; message: string } | undefined;
  replacedBy: Replacement | undefined;
  constructor(
    readonly workerId: string,
    readonly sessionId = `se-${workerId}`,
  ) {}
  send(message: SessionResponse) {
    this.sent.push(message);
  }
  close(kind: DomainErrorKind, message: string) {
    this.closedWith = { kind, message };
  }
  replaced(by: Replacement) {
    this.replacedBy = by;
    this.close("aborted", replacementMessage(this.workerId, by));
  }
  ofCase<C extends NonNullable<SessionResponse["message"]["case"]>>(kind: C) {
    type Value = Extract<SessionResponse["message"], { case: C; value: unknown }>["value"];
    return this.sent.map((m) => m.message).flatMap((m) => (m.case === kind ? [m.value as Value] : []));
  }
}

export const OPENING = { labels: {}, capacity: 1, clientVersion: "test", peer: "127.0.0.1" };
