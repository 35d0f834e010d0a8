import { invalidArgument } from "../domain/errors.js";
import { MemoryStore } from "./memory-store.js";
import type { Store } from "./store.js";

/** Opens the store named by --store / RUNNERLINE_STORE. */
export async function openStore(spec: string): Promise<Store> {
  if (spec === "memory") return new MemoryStore();
  throw invalidArgument(`unknown store "${spec}"; use "memory"`);
}
