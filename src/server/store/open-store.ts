import { invalidArgument } from "../domain/errors.js";
import { MemoryStore } from "./memory-store.js";
import { SqliteStore } from "./sqlite-store.js";
import type { Store } from "./store.js";

/**
 * Opens the store named by --store / RUNNERLINE_STORE: "memory", or
 * "sqlite:PATH" (the file and its folder are created when missing).
 */
export async function openStore(spec: string, options: { onCommit?: (seconds: number) => void } = {}): Promise<Store> {
  if (spec === "memory") return new MemoryStore();
  if (spec.startsWith("sqlite:")) {
    const path = spec.slice("sqlite:".length);
    if (path === "") throw invalidArgument(`store "${spec}" names no file; use "sqlite:PATH"`);
    return SqliteStore.open(path, options);
  }
  throw invalidArgument(`unknown store "${spec}"; use "memory" or "sqlite:PATH"`);
}
