import type { FieldRef, Predicate } from "../filter/compile.js";

/**
 * Filter predicates as SQL over the indexed columns of sqlite-schema.ts, so a
 * filter on ids, statuses, counts, times or labels runs in SQLite rather than
 * as a scan in process. What has no column (snapshot.cpu.usage_percent, error
 * messages, …) is left for matchesPredicate; see splitForSql.
 *
 * NULL (an unset time, a missing label) must match no comparison, and NOT of
 * such a comparison must match, as in memory: every comparison is therefore
 * wrapped in COALESCE(…, 0), so it is 0 or 1, never NULL.
 */

export type SqlValue = string | number | bigint | Uint8Array | null;

export interface SqlCondition {
  sql: string;
  params: SqlValue[];
}

/** What a filter path stands for in a table: a column expression (text spliced into SQL; never user input). */
type Column = { sql: string; params: SqlValue[]; type: "text" | "number" | "time" };

export type ColumnCatalog = (field: FieldRef) => Column | undefined;

const fixed =
  (columns: Record<string, Column["type"]>, extra: Record<string, Column> = {}): ColumnCatalog =>
  (field) => {
    const path = field.names.join(".");
    if (field.mapStep >= 0 || field.repeated) return undefined;
    if (Object.hasOwn(extra, path)) return extra[path];
    return Object.hasOwn(columns, path) ? { sql: path, params: [], type: columns[path]! } : undefined;
  };

export const ROLLOUT_COLUMNS: ColumnCatalog = fixed({
  rollout_id: "text",
  status: "number",
  mode: "number",
  attempt_count: "number",
  create_time: "time",
  start_time: "time",
  end_time: "time",
});

export const ATTEMPT_COLUMNS: ColumnCatalog = fixed({
  attempt_id: "text",
  rollout_id: "text",
  sequence_id: "number",
  worker_id: "text",
  status: "number",
  create_time: "time",
  start_time: "time",
  end_time: "time",
  last_heartbeat_time: "time",
});

const workerColumns = fixed(
  {
    worker_id: "text",
    status: "number",
    capacity: "number",
    last_heartbeat_time: "time",
    last_dequeue_time: "time",
    last_busy_time: "time",
    last_idle_time: "time",
    connect_time: "time",
    create_time: "time",
    cordoned: "number",
  },
  // Worker.connected is true exactly while the worker holds a session (attachment "open").
  { connected: { sql: "(attachment = 'open')", params: [], type: "number" } },
);

export const WORKER_COLUMNS: ColumnCatalog = (field) => {
  if (field.mapStep === 0 && field.names[0] === "labels" && field.names.length === 2) {
    return { sql: "(SELECT value FROM json_each(workers.labels) WHERE key = ?)", params: [field.names[1]!], type: "text" };
  }
  return workerColumns(field);
};

/** The predicate as one SQL condition, or undefined if any part of it has no column. */
export function predicateToSql(predicate: Predicate, columns: ColumnCatalog): SqlCondition | undefined {
  switch (predicate.kind) {
    case "and":
    case "or": {
      const parts = predicate.items.map((item) => predicateToSql(item, columns));
      if (parts.some((part) => part === undefined)) return undefined;
      const joiner = predicate.kind === "and" ? " AND " : " OR ";
      return { sql: `(${parts.map((p) => p!.sql).join(joiner)})`, params: parts.flatMap((p) => p!.params) };
    }
    case "not": {
      const inner = predicateToSql(predicate.item, columns);
      return inner && { sql: `(NOT ${inner.sql})`, params: inner.params };
    }
    case "present": {
      const column = columns(predicate.field);
      if (column === undefined) return undefined;
      const test = column.type === "time" ? "IS NOT NULL" : column.type === "text" ? "!= ''" : "!= 0";
      return { sql: `COALESCE(${column.sql} ${test}, 0)`, params: column.params };
    }
    case "contains": {
      const column = columns(predicate.field);
      if (column === undefined || column.type !== "text") return undefined;
      // instr is case-sensitive, as String.prototype.includes.
      return { sql: `COALESCE(instr(${column.sql}, ?) > 0, 0)`, params: [...column.params, predicate.value] };
    }
    case "compare": {
      const column = columns(predicate.field);
      if (column === undefined) return undefined;
      const value = typeof predicate.value === "boolean" ? (predicate.value ? 1 : 0) : predicate.value;
      return { sql: `COALESCE(${column.sql} ${predicate.operator} ?, 0)`, params: [...column.params, value] };
    }
  }
}

/**
 * Splits a predicate into what SQL can run and what is left for the process:
 * the top-level AND terms that translate go to SQL, the others are returned
 * as `rest` (undefined when nothing is left).
 */
export function splitForSql(predicate: Predicate, columns: ColumnCatalog): { sql: SqlCondition[]; rest?: Predicate } {
  const terms = predicate.kind === "and" ? predicate.items : [predicate];
  const sql: SqlCondition[] = [];
  const rest: Predicate[] = [];
  for (const term of terms) {
    const condition = predicateToSql(term, columns);
    if (condition === undefined) rest.push(term);
    else sql.push(condition);
  }
  if (rest.length === 0) return { sql };
  return { sql, rest: rest.length === 1 ? rest[0]! : { kind: "and", items: rest } };
}
