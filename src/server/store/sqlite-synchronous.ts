import type { Synchronous } from "./sqlite-schema.js";

/**
 * The PRAGMA synchronous settings the server offers (`--sqlite-synchronous`);
 * docs/storage.md says what an acknowledgement guarantees under each. A module
 * of its own, so that the serve flags can name them without loading SQLite.
 */
export const SQLITE_SYNCHRONOUS_SETTINGS = ["normal", "full"] as const satisfies readonly Synchronous[];

/**
 * NORMAL: in WAL mode a commit is as safe as under FULL against a process
 * crash, and only commits since the last checkpoint are at risk on power loss,
 * the same kind of promise as Redis's AOF `everysec`; FULL adds an fsync per
 * commit.
 */
export const DEFAULT_SYNCHRONOUS: Synchronous = "normal";
