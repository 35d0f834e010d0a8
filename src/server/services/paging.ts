import { createHash } from "node:crypto";
import { quote } from "../../common/quote.js";
import { invalidArgument } from "../domain/errors.js";
import type { ListQuery, OrderTerm, SortCatalog } from "../store/query.js";

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 1000;

export interface ListRequestFields {
  pageSize: number;
  pageToken: string;
  orderBy: string;
}

/**
 * Turns the AIP-158/132 request fields into a store query: validated
 * order_by (the id always breaks ties), page size, and an offset read from a
 * page token that is bound to the query that made it.
 */
export function listQuery<Filter>(
  request: ListRequestFields,
  filter: Filter,
  catalog: SortCatalog<unknown>,
  idField: string,
  defaultOrder: string,
): ListQuery<Filter> {
  if (request.pageSize < 0) throw invalidArgument("page_size must not be negative");
  const limit = request.pageSize === 0 ? DEFAULT_PAGE_SIZE : Math.min(request.pageSize, MAX_PAGE_SIZE);
  const orderBy = parseOrderBy(request.orderBy || defaultOrder, catalog);
  if (!orderBy.some((term) => term.field === idField)) orderBy.push({ field: idField, descending: false });
  const fingerprint = queryFingerprint(filter, orderBy);
  const offset = request.pageToken === "" ? 0 : readPageToken(request.pageToken, fingerprint);
  return { filter, orderBy, offset, limit };
}

/** `returned`: how many items the page holds, fewer than the limit when cut by size (see fitToBytes). */
export function nextPageToken(query: ListQuery<unknown>, total: number, returned = query.limit): string {
  const next = query.offset + returned;
  if (next >= total) return "";
  const token = { o: next, q: queryFingerprint(query.filter, query.orderBy) };
  return Buffer.from(JSON.stringify(token)).toString("base64url");
}

/** Longer than any real sort spec; a longer one is refused before it is parsed or echoed. */
const MAX_ORDER_BY_LENGTH = 512;

export function parseOrderBy(text: string, catalog: SortCatalog<unknown>): OrderTerm[] {
  if (text.length > MAX_ORDER_BY_LENGTH) {
    throw invalidArgument(`order_by is ${text.length} characters; at most ${MAX_ORDER_BY_LENGTH} are accepted`);
  }
  return text.split(",").map((part) => {
    const words = part.trim().split(/\s+/);
    const [field = "", direction = "asc", ...rest] = words;
    if (catalog[field] === undefined) {
      throw invalidArgument(`order_by: unknown field ${quote(field)}; known: ${Object.keys(catalog).join(", ")}`);
    }
    if (rest.length > 0 || (direction !== "asc" && direction !== "desc")) {
      throw invalidArgument(`order_by: expected "<field> [asc|desc]", got ${quote(part.trim())}`);
    }
    return { field, descending: direction === "desc" };
  });
}

function readPageToken(token: string, fingerprint: string): number {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw invalidArgument("page_token is not a token this server issued");
  }
  const { o, q } = (parsed ?? {}) as { o?: unknown; q?: unknown };
  if (typeof o !== "number" || !Number.isSafeInteger(o) || o < 0 || typeof q !== "string") {
    throw invalidArgument("page_token is not a token this server issued");
  }
  if (q !== fingerprint) throw invalidArgument("page_token belongs to a different query (filters or order_by changed)");
  return o;
}

function queryFingerprint(filter: unknown, orderBy: OrderTerm[]): string {
  return createHash("sha256").update(JSON.stringify({ filter, orderBy })).digest("base64url").slice(0, 16);
}

/** Per item, what a response adds beyond the item's own encoding (tag and length). */
const ITEM_OVERHEAD_BYTES = 16;

/**
 * The longest prefix of `items` whose encoded size stays within `budget`
 * bytes, but at least one item, so paging always moves on. What is cut off
 * is for the next page (or, for WaitRollouts, named as remaining).
 */
export function fitToBytes<T>(items: T[], sizeOf: (item: T) => number, budget: number): T[] {
  let used = 0;
  for (let i = 0; i < items.length; i++) {
    used += sizeOf(items[i] as T) + ITEM_OVERHEAD_BYTES;
    if (used > budget && i > 0) return items.slice(0, i);
  }
  return items;
}
