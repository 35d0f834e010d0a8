import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { parse as parseYaml } from "yaml";

export type Role = "runner" | "operator" | "admin";
export const ROLES: readonly Role[] = ["runner", "operator", "admin"];

/** Who a valid token speaks for. Never holds the token itself. */
export interface Principal {
  /** The token's name from the auth file, for logs and error messages. */
  readonly name: string;
  readonly role: Role;
  /** Runner tokens only: may this token act as `workerId`? */
  mayActAs(workerId: string): boolean;
}

/** The tokens the server accepts, keyed by the hex SHA-256 of the token. */
export type TokenTable = ReadonlyMap<string, Principal>;

export const sha256Hex = (token: string): string => createHash("sha256").update(token).digest("hex");

/**
 * Reads an auth file (YAML, or JSON, which YAML also parses):
 *
 *   tokens:
 *     - { name: gpu-fleet, role: runner, sha256: <hex>, workers: ["gpu-*"] }
 *
 * Throws with the entry and field at fault, so a typo never silently locks
 * everyone out (or lets everyone in) after a reload.
 */
export async function loadTokenFile(path: string): Promise<TokenTable> {
  const text = await readFile(path, "utf8");
  let document: unknown;
  try {
    document = parseYaml(text);
  } catch (error) {
    throw new Error(`auth file ${path}: not valid YAML or JSON: ${(error as Error).message}`);
  }
  return parseTokenTable(document, path);
}

export function parseTokenTable(document: unknown, source = "auth file"): TokenTable {
  const tokens = (document as { tokens?: unknown } | null)?.tokens;
  if (!Array.isArray(tokens)) throw new Error(`${source}: expected a top-level "tokens" list`);
  const table = new Map<string, Principal>();
  const names = new Set<string>();
  tokens.forEach((entry: unknown, i) => {
    const at = `${source}: tokens[${i}]`;
    if (entry === null || typeof entry !== "object" || Array.isArray(entry)) throw new Error(`${at} must be a mapping`);
    const { name, role, sha256, workers, ...rest } = entry as Record<string, unknown>;
    const unknown = Object.keys(rest);
    if (unknown.length > 0) throw new Error(`${at}: unknown field "${unknown[0]}" (known: name, role, sha256, workers)`);
    if (typeof name !== "string" || name === "") throw new Error(`${at}.name must be a non-empty string`);
    if (names.has(name)) throw new Error(`${at}.name "${name}" is used twice`);
    names.add(name);
    if (typeof role !== "string" || !ROLES.includes(role as Role)) {
      throw new Error(`${at}.role must be one of ${ROLES.join(", ")}`);
    }
    if (typeof sha256 !== "string" || !/^[0-9a-fA-F]{64}$/.test(sha256)) {
      throw new Error(`${at}.sha256 must be 64 hex digits (the SHA-256 of the token, never the token)`);
    }
    const hash = sha256.toLowerCase();
    if (table.has(hash)) throw new Error(`${at}.sha256 is the same as another token's`);
    let mayActAs: (workerId: string) => boolean = () => true;
    if (role === "runner") {
      if (!Array.isArray(workers) || workers.length === 0 || !workers.every((w) => typeof w === "string" && w !== "")) {
        throw new Error(`${at}.workers must list the worker id patterns a runner token may act as (e.g. ["gpu-*"])`);
      }
      const pattern = globsToRegExp(workers as string[]);
      mayActAs = (workerId) => pattern.test(workerId);
    } else if (workers !== undefined) {
      throw new Error(`${at}.workers applies to runner tokens only`);
    }
    table.set(hash, { name, role: role as Role, mayActAs });
  });
  return table;
}

/** "*" matches any run of characters, "?" one character; everything else is literal. */
function globsToRegExp(globs: string[]): RegExp {
  const alternatives = globs.map((glob) =>
    glob
      .split("")
      .map((c) => (c === "*" ? ".*" : c === "?" ? "." : c.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))
      .join(""),
  );
  return new RegExp(`^(?:${alternatives.join("|")})$`);
}
