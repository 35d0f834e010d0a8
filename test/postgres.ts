import pg from "pg";
import { PostgresStore } from "../src/server/store/postgres-store.js";

/**
 * The PostgreSQL the tests use: RUNNERLINE_TEST_POSTGRES, else the one this
 * project's machines run (trust auth, database `test`). Each store gets a
 * schema of its own, so tests never see each other's rows.
 *
 * Where none answers, a plain `npm test` leaves the PostgreSQL cases out and
 * says so in one line; CI sets RUNNERLINE_REQUIRE_POSTGRES=1 (.ci/run), and
 * then an unreachable database fails the run instead.
 */
export const POSTGRES_URL = process.env.RUNNERLINE_TEST_POSTGRES ?? "postgres://postgres@127.0.0.1:5432/test";

async function reachable(url: string): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
  try {
    await client.connect();
    await client.query("SELECT 1");
    return undefined;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  } finally {
    await client.end().catch(() => undefined);
  }
}

const problem = await reachable(POSTGRES_URL);
if (problem !== undefined) {
  const line = `PostgreSQL tests skipped: nothing answers at ${POSTGRES_URL} (${problem}); start PostgreSQL there or set RUNNERLINE_TEST_POSTGRES to run them`;
  if (process.env.RUNNERLINE_REQUIRE_POSTGRES === "1") throw new Error(`RUNNERLINE_REQUIRE_POSTGRES=1 but ${line.slice("PostgreSQL tests skipped: ".length)}`);
  if (!(globalThis as { postgresSkipSaid?: boolean }).postgresSkipSaid) {
    (globalThis as { postgresSkipSaid?: boolean }).postgresSkipSaid = true;
    console.warn(line);
  }
}

/** Whether the PostgreSQL cases run. */
export const POSTGRES_AVAILABLE = problem === undefined;

/** Schemas and databases earlier test runs left (named by freshSchema), once they are an hour old: dropped. */
async function dropLeftovers() {
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  await client.connect();
  try {
    const old = (name: string) => {
      const stamp = /^rl_[a-z]+_\d+_([0-9a-z]+)_\d+$/.exec(name)?.[1];
      return stamp !== undefined && Date.now() - Number.parseInt(stamp, 36) > 3_600_000;
    };
    const schemas = await client.query<{ name: string }>("SELECT nspname AS name FROM pg_namespace WHERE nspname LIKE 'rl\\_%'");
    for (const { name } of schemas.rows) if (old(name)) await client.query(`DROP SCHEMA IF EXISTS ${name} CASCADE`);
    const databases = await client.query<{ name: string }>("SELECT datname AS name FROM pg_database WHERE datname LIKE 'rl\\_%'");
    for (const { name } of databases.rows) if (old(name)) await client.query(`DROP DATABASE IF EXISTS ${name}`).catch(() => undefined);
  } finally {
    await client.end();
  }
}
if (POSTGRES_AVAILABLE && !(globalThis as { postgresSwept?: boolean }).postgresSwept) {
  (globalThis as { postgresSwept?: boolean }).postgresSwept = true;
  await dropLeftovers().catch(() => undefined);
}

let schemas = 0;

/** A schema name no other test process uses. */
export function freshSchema(prefix = "t"): string {
  return `rl_${prefix}_${process.pid}_${Date.now().toString(36)}_${++schemas}`;
}

/**
 * A store on a schema of its own. Tests rarely close their stores, so idle
 * connections go at once: hundreds of stores must not exhaust the server's
 * connection slots.
 */
export function postgresStore(schema = freshSchema()): Promise<PostgresStore> {
  return PostgresStore.open(POSTGRES_URL, { schema, poolSize: 3, idleMs: 50, telemetryFlushMs: 100 });
}

/** The URL of a database of its own, for server processes (which take no schema option): created empty. */
export async function freshDatabase(prefix = "t"): Promise<string> {
  const name = freshSchema(prefix);
  const admin = new pg.Client({ connectionString: POSTGRES_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(POSTGRES_URL);
  url.pathname = `/${name}`;
  return url.toString();
}
