/**
 * The bench's PostgreSQL: a fresh database per measured server set (created
 * through the URL the bench is given, dropped when the set stops), whether
 * anything answers there, and the CPU time of the machine's `postgres`
 * processes, read from /proc.
 */
import { readdirSync, readFileSync } from "node:fs";
import pg from "pg";

/** Where the bench finds PostgreSQL: `--postgres URL`, else RUNNERLINE_BENCH_POSTGRES, else the project's machines' one. */
export const DEFAULT_POSTGRES_URL = process.env.RUNNERLINE_BENCH_POSTGRES ?? "postgres://postgres@127.0.0.1:5432/test";

/** The URL with any password taken out, for rows and messages. */
export function shownUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== "") parsed.password = "***";
    return parsed.toString();
  } catch {
    return url;
  }
}

/** Thrown where a row cannot be measured because something it needs is missing; the row carries the message as is. */
export class Skipped extends Error {}

const reachability = new Map<string, Promise<string | undefined>>();

/** Undefined when PostgreSQL answers at `url`, else what went wrong; asked once per URL and run. */
export function postgresProblem(url: string): Promise<string | undefined> {
  let answer = reachability.get(url);
  if (answer === undefined) {
    answer = (async () => {
      const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3_000 });
      try {
        await client.connect();
        await client.query("SELECT 1");
        return undefined;
      } catch (error) {
        return error instanceof Error ? error.message || error.constructor.name : String(error);
      } finally {
        await client.end().catch(() => undefined);
      }
    })();
    reachability.set(url, answer);
  }
  return answer;
}

/** Throws Skipped ("skipped: no PostgreSQL at URL") unless PostgreSQL answers at `url`. */
export async function requirePostgres(url: string): Promise<void> {
  if ((await postgresProblem(url)) !== undefined) throw new Skipped(`skipped: no PostgreSQL at ${shownUrl(url)}`);
}

export interface BenchDatabase {
  /** The new database's URL: `base` with its database name replaced. */
  url: string;
  name: string;
  /** Drops it (its connections closed first). */
  drop(): Promise<void>;
}

let created = 0;
const NAME_PREFIX = "rl_bench_";
let swept = false;

async function admin<T>(base: string, body: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: base, connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    return await body(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Creates an empty database named rl_bench_<pid>_<n> next to the one `base` names. The first call of a run also
 * drops rl_bench_* databases that an earlier bench on this machine left behind (its pid no longer runs).
 */
export async function createBenchDatabase(base: string): Promise<BenchDatabase> {
  const name = `${NAME_PREFIX}${process.pid}_${++created}`;
  await admin(base, async (client) => {
    if (!swept) {
      swept = true;
      const { rows } = await client.query<{ datname: string }>("SELECT datname FROM pg_database WHERE datname LIKE 'rl\\_bench\\_%'");
      for (const { datname } of rows) {
        const pid = Number(/^rl_bench_(\d+)_\d+$/.exec(datname)?.[1]);
        if (!Number.isInteger(pid) || pid === process.pid || isRunning(pid)) continue;
        await client.query(`DROP DATABASE IF EXISTS ${datname} WITH (FORCE)`).catch(() => undefined);
      }
    }
    await client.query(`CREATE DATABASE ${name}`);
  });
  const url = new URL(base);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    drop: () => admin(base, (client) => client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => undefined),
  };
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

/**
 * CPU seconds used so far by every process on this machine whose name (comm) is `postgres`: the postmaster, its
 * background processes and one backend per connection, of every database and client. utime + stime of each, plus
 * cutime + cstime (the time of children it has reaped: backends that exited in between still count, through the
 * postmaster). Undefined when no such process is visible (PostgreSQL runs elsewhere, or /proc is not Linux's).
 */
export function postgresCpuSeconds(): number | undefined {
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return undefined;
  }
  let ticks = 0;
  let found = 0;
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue; // gone since the listing
    }
    const open = stat.indexOf("(");
    const close = stat.lastIndexOf(")");
    if (stat.slice(open + 1, close) !== "postgres") continue;
    // After "pid (comm) ": state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    const fields = stat.slice(close + 2).split(" ");
    ticks += Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
    found++;
  }
  return found === 0 ? undefined : ticks / TICKS_PER_SECOND;
}

/**
 * CPU seconds used so far by each backend (by pid) connected to the database `name`: the processes whose title
 * is "postgres: USER NAME …" (after the cluster name, where one is set). On a machine whose PostgreSQL others use too, the difference of two readings is the
 * measured database's own work, where postgresCpuSeconds counts everyone's; it leaves out the shared background
 * processes (WAL writer, checkpointer) and what a backend used after the last reading before it exited.
 */
export function databaseBackendsCpu(name: string): Map<number, number> {
  const found = new Map<number, number>();
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return found;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      if (stat.slice(stat.indexOf("(") + 1, close) !== "postgres") continue;
      // "postgres: [CLUSTER: ]USER DATABASE HOST(PORT) STATE" (Debian sets cluster_name, e.g. "15/main").
      const title = /^postgres: (?:\S+: )?\S+ (\S+) /.exec(readFileSync(`/proc/${entry}/cmdline`, "utf8").replace(/\0/g, " "));
      if (title?.[1] !== name) continue;
      const fields = stat.slice(close + 2).split(" ");
      found.set(Number(entry), (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND);
    } catch {
      continue; // gone since the listing
    }
  }
  return found;
}

/** CPU seconds the backends spent between two databaseBackendsCpu readings (one that started since counts whole). */
export function backendsCpuSince(before: Map<number, number>, after: Map<number, number>): number {
  let seconds = 0;
  for (const [pid, cpu] of after) seconds += cpu - (before.get(pid) ?? 0);
  return seconds;
}
