import type { FilterExpression } from "../../filter/compile.js";
import { type ColumnCatalog, splitForSql } from "../filter-sql.js";
import type { SqlValue } from "./rows.js";

/**
 * The WHERE clauses of the SQLite store's lists, built from parts: each
 * builder appends its condition to `where` and its values to `params` (`?`
 * placeholders, bound in order), and adds nothing for a filter left unset.
 * PostgreSQL's twin, with numbered placeholders, is postgres/where.ts.
 */

/** Adds what SQL can run of a filter expression to `where`; returns the part left for the process. */
export function expression(where: string[], params: SqlValue[], filter: FilterExpression | undefined, columns: ColumnCatalog) {
  if (filter === undefined) return undefined;
  const split = splitForSql(filter.predicate, columns);
  for (const condition of split.sql) {
    where.push(condition.sql);
    params.push(...condition.params);
  }
  return split.rest;
}

export function inList(where: string[], params: SqlValue[], column: string, values: readonly number[]) {
  if (values.length === 0) return;
  where.push(`${column} IN (${values.map(() => "?").join(", ")})`);
  params.push(...values);
}

export function equal(where: string[], params: SqlValue[], column: string, value: string) {
  if (value === "") return;
  where.push(`${column} = ?`);
  params.push(value);
}

/** Case-sensitive substring, as String.prototype.includes. */
export function contains(where: string[], params: SqlValue[], column: string, value: string) {
  if (value === "") return;
  where.push(`instr(${column}, ?) > 0`);
  params.push(value);
}
