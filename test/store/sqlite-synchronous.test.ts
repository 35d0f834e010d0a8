import Database from "better-sqlite3";
import { afterEach, describe, expect, it, type MockInstance, vi } from "vitest";
import { parseServeArgs } from "../../src/cli/serve-command.js";
import { startServer } from "../../src/server/app.js";
import { SqliteStore } from "../../src/server/store/sqlite-store.js";
import type { Synchronous } from "../../src/server/store/sqlite-schema.js";
import { tempDatabasePath } from "../harness.js";
import { type CliProcess, startCli, stopAll } from "../liveness/processes.js";

/**
 * `--sqlite-synchronous` must reach SQLite. PRAGMA synchronous belongs to a
 * connection, so another connection to the same file cannot tell what the
 * server's is set to: the tests catch the connections the code under test
 * opens (as it sets their pragmas) and ask those.
 */

/** PRAGMA synchronous reads back as a number. */
const PRAGMA_VALUE: Record<Synchronous, number> = { normal: 1, full: 2 };

let pragma: MockInstance<Database.Database["pragma"]> | undefined;

/** Starts recording every connection on which a pragma is set; returns those opened since, in order. */
function watchConnections(): () => Database.Database[] {
  pragma = vi.spyOn(Database.prototype, "pragma");
  return () => [...new Set(pragma!.mock.contexts as Database.Database[])];
}

const synchronousOf = (db: Database.Database) => db.pragma("synchronous", { simple: true });

afterEach(() => {
  pragma?.mockRestore();
  pragma = undefined;
});

describe("PRAGMA synchronous of the SQLite store", () => {
  it.each([
    ["no option (the default)", undefined, PRAGMA_VALUE.normal],
    ["normal", "normal" as const, PRAGMA_VALUE.normal],
    ["full", "full" as const, PRAGMA_VALUE.full],
  ])("SqliteStore.open with %s sets it on its connection", async (_, synchronous, expected) => {
    const connections = watchConnections();
    const store = SqliteStore.open(tempDatabasePath(), synchronous === undefined ? {} : { synchronous });
    const [db] = connections();
    expect(synchronousOf(db!)).toBe(expected);
    await store.close();
  });

  it.each([
    ["no flag", [], {}, PRAGMA_VALUE.normal],
    ["--sqlite-synchronous full", ["--sqlite-synchronous", "full"], {}, PRAGMA_VALUE.full],
    ["RUNNERLINE_SQLITE_SYNCHRONOUS=full", [], { RUNNERLINE_SQLITE_SYNCHRONOUS: "full" }, PRAGMA_VALUE.full],
    ["the flag over the variable", ["--sqlite-synchronous", "normal"], { RUNNERLINE_SQLITE_SYNCHRONOUS: "full" }, PRAGMA_VALUE.normal],
  ])("the server's connection follows %s", async (_, flags: string[], env: NodeJS.ProcessEnv, expected) => {
    const args = ["--store", `sqlite:${tempDatabasePath()}`, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", ...flags];
    const connections = watchConnections();
    const server = await startServer({ ...parseServeArgs(args, env), log: () => {} });
    try {
      const opened = connections();
      expect(opened).toHaveLength(1);
      expect(synchronousOf(opened[0]!)).toBe(expected);
    } finally {
      await server.close();
    }
  });
});

describe("runnerline serve names the setting in its start-up line", () => {
  const processes: CliProcess[] = [];
  afterEach(() => stopAll(processes.splice(0)));

  it("SQLite NORMAL by default, FULL when asked; nothing for the memory store", async () => {
    const serve = (...args: string[]) => {
      // A variable set in the test's environment must not decide what "by default" means here.
      const server = startCli(["serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", ...args], { RUNNERLINE_SQLITE_SYNCHRONOUS: "" });
      processes.push(server);
      return server;
    };
    const byDefault = serve("--store", `sqlite:${tempDatabasePath()}`);
    const full = serve("--store", `sqlite:${tempDatabasePath()}`, "--sqlite-synchronous", "full");
    const memory = serve("--store", "memory", "--sqlite-synchronous", "full");
    await Promise.all([byDefault, full, memory].map((server) => server.waitFor("serving gRPC", 30_000)));
    expect(byDefault.output()).toMatch(/store sqlite:\S+ \(synchronous=NORMAL\), /);
    expect(full.output()).toMatch(/store sqlite:\S+ \(synchronous=FULL\), /);
    expect(memory.output()).toMatch(/store memory, /);
    expect(memory.output()).not.toContain("synchronous");
  }, 60_000);
});
