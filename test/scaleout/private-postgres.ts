/**
 * A PostgreSQL server of the test's own, in a temporary folder on a free
 * port, that the test may stop and start at will (the shared one at
 * POSTGRES_URL is never touched). initdb refuses to run as root, so as root
 * it runs as the `postgres` user through runuser.
 */
import { execFile } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { freePort } from "../polling.js";

const run = promisify(execFile);

export interface PrivatePostgres {
  /** postgres://postgres@127.0.0.1:PORT/runnerline (created empty). */
  url: string;
  port: number;
  /** Stops the server at once, as a crash would (`pg_ctl stop -m immediate`). */
  kill(): Promise<void>;
  /** Starts it again on the same folder and port. */
  start(): Promise<void>;
  /** Stops it and removes its folder. */
  remove(): Promise<void>;
}

/** The folder of initdb and pg_ctl, newest major version first. */
function binaries(): string | undefined {
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root).sort((a, b) => Number(b) - Number(a));
  return versions.map((v) => join(root, v, "bin")).find((bin) => existsSync(join(bin, "initdb")) && existsSync(join(bin, "pg_ctl")));
}

/** Starts a private PostgreSQL, or says why it cannot be done here. */
export async function startPrivatePostgres(): Promise<PrivatePostgres | string> {
  const bin = binaries();
  if (bin === undefined) return "no initdb/pg_ctl under /usr/lib/postgresql/*/bin";
  let uid: number | undefined;
  let gid: number | undefined;
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    try {
      uid = Number((await run("id", ["-u", "postgres"])).stdout.trim());
      gid = Number((await run("id", ["-g", "postgres"])).stdout.trim());
      await run("runuser", ["--help"]);
    } catch {
      return "running as root, and initdb refuses root: no `postgres` user or no runuser to run it as";
    }
  }
  // As root, commands run as postgres; otherwise as ourselves.
  const command = (tool: string, args: string[]) =>
    asRoot ? run("runuser", ["-u", "postgres", "--", join(bin, tool), ...args]) : run(join(bin, tool), args);

  const folder = mkdtempSync(join(tmpdir(), "runnerline-pg-"));
  if (asRoot) chownSync(folder, uid!, gid!);
  const data = join(folder, "data");
  const port = await freePort();
  // fsync off: an immediate stop is a crash of PostgreSQL, not of the machine, so the OS keeps every write.
  const options = `-p ${port} -k ${folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100`;
  const start = async () => {
    await command("pg_ctl", ["-D", data, "-o", options, "-l", join(folder, "log"), "-w", "-t", "30", "start"]);
  };
  const kill = async () => {
    await command("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]);
  };
  try {
    await command("initdb", ["-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
    await start();
    const admin = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${port}/postgres` });
    await admin.connect();
    try {
      await admin.query("CREATE DATABASE runnerline");
    } finally {
      await admin.end();
    }
  } catch (error) {
    await kill().catch(() => undefined);
    rmSync(folder, { recursive: true, force: true });
    return `could not start a private PostgreSQL: ${error instanceof Error ? error.message : String(error)}`;
  }
  return {
    url: `postgres://postgres@127.0.0.1:${port}/runnerline`,
    port,
    kill,
    start,
    async remove() {
      await kill().catch(() => undefined);
      rmSync(folder, { recursive: true, force: true });
    },
  };
}
