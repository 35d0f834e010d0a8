import type { Command } from "commander";
import { UsageError } from "./connection.js";

/** The options of every `… list` command. */
export interface ListOptions {
  status?: string;
  filter?: string;
  sort?: string;
  limit: string;
}

export function addListOptions(command: Command, sortExample: string): Command {
  return command
    .option("--status <LIST>", "only these statuses, comma-separated (e.g. idle,busy)")
    .option("--filter <EXPR>", 'filter expression, e.g. \'status = FAILED AND end_time > now - 1h\' (see docs/operators.md)')
    .option("--sort <FIELD[:desc],…>", `order, e.g. ${sortExample}`)
    .option("--limit <N>", "print at most N (0: all)", "100");
}

/** "idle,busy" → the enum numbers, by short name; unknown names are usage errors. */
export function parseStatuses<E extends number>(text: string | undefined, names: Record<number, string>, what: string): E[] {
  if (text === undefined || text.trim() === "") return [];
  // A TypeScript enum maps both ways; the number → name half is what is wanted.
  const values = Object.entries(names).filter(([number]) => /^\d+$/.test(number) && number !== "0");
  return text.split(",").map((part) => {
    const wanted = part.trim().toUpperCase();
    const entry = values.find(([, name]) => name === wanted);
    if (entry === undefined) {
      const known = values.map(([, name]) => name.toLowerCase());
      throw new UsageError(`unknown ${what} status "${part.trim()}"; known: ${known.join(", ")}`);
    }
    return Number(entry[0]) as E;
  });
}

/** "last_heartbeat_time:desc,worker_id" → the API's order_by ("last_heartbeat_time desc, worker_id"). */
export function orderBy(sort: string | undefined): string {
  if (sort === undefined) return "";
  return sort
    .split(",")
    .map((term) => {
      const [field = "", direction, ...rest] = term.trim().split(":");
      if (field === "" || rest.length > 0 || (direction !== undefined && direction !== "asc" && direction !== "desc")) {
        throw new UsageError(`--sort: expected FIELD[:asc|:desc], got "${term.trim()}"`);
      }
      return direction === undefined ? field : `${field} ${direction}`;
    })
    .join(", ");
}

export function parseLimit(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--limit must be a whole number ≥ 0, not "${text}"`);
  return n === 0 ? Number.MAX_SAFE_INTEGER : n;
}

/** Pages through a list call until `limit` items (or the end). */
export async function collectPages<T>(
  limit: number,
  fetch: (pageSize: number, pageToken: string) => Promise<{ items: T[]; nextPageToken: string; totalSize: number }>,
): Promise<{ items: T[]; total: number }> {
  const items: T[] = [];
  let token = "";
  let total = 0;
  do {
    const page = await fetch(Math.min(1000, limit - items.length), token);
    items.push(...page.items);
    total = page.totalSize;
    token = page.nextPageToken;
  } while (token !== "" && items.length < limit);
  return { items: items.slice(0, limit), total };
}

/** "…and 12 more" under a truncated table (to stderr, so stdout stays parseable). */
export function noteTruncated(shown: number, total: number) {
  if (total > shown) process.stderr.write(`(${shown} of ${total} shown; --limit 0 shows all)\n`);
}
