import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { sha256Hex } from "../../src/server/auth/tokens.js";

/** Tokens of the test auth file, in clear (the file holds their hashes). */
export const TOKENS = {
  runner: "runner-secret-token",
  operator: "operator-secret-token",
  admin: "admin-secret-token",
} as const;

export type TokenEntry = { name: string; role: string; token: string; workers?: string[] };

export const DEFAULT_ENTRIES: TokenEntry[] = [
  { name: "gpu-fleet", role: "runner", token: TOKENS.runner, workers: ["gpu-*"] },
  { name: "dashboard", role: "operator", token: TOKENS.operator },
  { name: "trainer", role: "admin", token: TOKENS.admin },
];

let folder: string | undefined;
let count = 0;

/** Writes an auth file (YAML) with the hashes of `entries`; returns its path. */
export function writeAuthFile(entries: TokenEntry[] = DEFAULT_ENTRIES, path?: string): string {
  if (folder === undefined) {
    const made = mkdtempSync(join(tmpdir(), "runnerline-auth-"));
    process.once("exit", () => rmSync(made, { recursive: true, force: true }));
    folder = made;
  }
  const file = path ?? join(folder, `auth-${++count}.yaml`);
  const tokens = entries.map(({ token, ...rest }) => ({ ...rest, sha256: sha256Hex(token) }));
  writeFileSync(file, stringify({ tokens }));
  return file;
}
