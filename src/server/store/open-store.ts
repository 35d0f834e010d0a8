import { invalidArgument } from "../domain/errors.js";
import { MemoryStore } from "./memory-store.js";
import type { Synchronous } from "./sqlite-schema.js";
import { SqliteStore } from "./sqlite-store.js";
import type { Store } from "./store.js";

const SQLITE_PREFIX = "sqlite:";

/** Whether `spec` names a SQLite store, the one kind whose synchronous setting applies. */
export const isSqliteSpec = (spec: string) => spec.startsWith(SQLITE_PREFIX);

/**
 * Opens the store named by --store / RUNNERLINE_STORE: "memory", or
 * "sqlite:PATH" (the file and its folder are created when missing).
 */
export async function openStore(spec: string, options: { onCommit?: (seconds: number) => void; synchronous?: Synchronous } = {}): Promise<Store> {
  if (spec === "memory") return new MemoryStore();
  if (isSqliteSpec(spec)) {
    const path = spec.slice(SQLITE_PREFIX.length);
    if (path === "") throw invalidArgument(`store "${spec}" names no file; use "sqlite:PATH"`);
    return SqliteStore.open(path, options);
  }
  throw invalidArgument(`unknown store "${spec}"; use "memory" or "sqlite:PATH"`);
}
