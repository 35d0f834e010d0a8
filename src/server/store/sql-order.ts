import type { OrderTerm, SortCatalog } from "./query.js";

/**
 * The ORDER BY terms of a list query in SQL, for the SQLite and PostgreSQL
 * stores alike: the requested fields, time fields with unset values last
 * (first when descending), then `tiebreak` (the insertion order) so that
 * pages are stable.
 */
export function sqlOrderBy(catalog: SortCatalog<unknown>, orderBy: readonly OrderTerm[], tiebreak: string): string {
  const terms = orderBy.map(({ field, descending }) => {
    const sort = catalog[field];
    // Field names are checked against the catalog, which is what makes them safe to splice in.
    if (sort === undefined || !Object.hasOwn(catalog, field)) throw new Error(`unknown order_by field "${field}"`);
    const direction = descending ? "DESC" : "ASC";
    return sort.time ? `${field} ${direction} NULLS ${descending ? "FIRST" : "LAST"}` : `${field} ${direction}`;
  });
  terms.push(`${tiebreak} ASC`);
  return terms.join(", ");
}
