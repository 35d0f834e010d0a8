import { invalidArgument } from "../domain/errors.js";
import { MemoryStore } from "./memory-store.js";
import { PostgresStore } from "./postgres-store.js";
import type { Synchronous } from "./sqlite-schema.js";
import { SqliteStore } from "./sqlite-store.js";
import type { Store } from "./store.js";

const SQLITE_PREFIX = "sqlite:";
const POSTGRES_PREFIXES = ["postgres://", "postgresql://"];

/** Whether `spec` names a PostgreSQL database (several servers may share it; docs/scaleout.md). */
export const isPostgresSpec = (spec: string) => POSTGRES_PREFIXES.some((prefix) => spec.startsWith(prefix));

/** Whether `spec` names a SQLite store, the one kind whose synchronous setting applies. */
export const isSqliteSpec = (spec: string) => spec.startsWith(SQLITE_PREFIX);

/**
 * Opens the store named by --store / RUNNERLINE_STORE: "memory",
 * "sqlite:PATH" (the file is created when missing; its folder only with
 * `createFolder`, which the server sets for its default ./data), or a
 * "postgres://user@host:port/db" URL (the schema is created or migrated).
 */
export async function openStore(
  spec: string,
  options: { onCommit?: (seconds: number) => void; synchronous?: Synchronous; replicaId?: string; createFolder?: boolean } = {},
): Promise<Store> {
  if (spec === "memory") return new MemoryStore();
  if (isSqliteSpec(spec)) {
    const path = spec.slice(SQLITE_PREFIX.length);
    if (path === "") throw invalidArgument(`store "${spec}" names no file; use "sqlite:PATH"`);
    return SqliteStore.open(path, options);
  }
  if (isPostgresSpec(spec)) return PostgresStore.open(spec, { onCommit: options.onCommit, replicaId: options.replicaId });
  throw invalidArgument(`unknown store "${spec}"; use "memory", "sqlite:PATH" or "postgres://user@host:port/db"`);
}
