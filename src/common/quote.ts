/** Longest part of a caller's value that an error message repeats back. */
export const QUOTE_MAX_CHARS = 128;

/**
 * A caller-supplied value as an error message repeats it: in double quotes,
 * cut after QUOTE_MAX_CHARS characters with "…". Messages travel in the
 * grpc-message trailer, which shares the client's metadata limit (8 KiB by
 * default) with everything else; an unbounded echo there fails the call and,
 * with some clients, others on the same connection.
 */
export function quote(value: string): string {
  const chars = Array.from(value.length > QUOTE_MAX_CHARS * 2 ? value.slice(0, QUOTE_MAX_CHARS * 2) : value);
  return chars.length > QUOTE_MAX_CHARS ? `"${chars.slice(0, QUOTE_MAX_CHARS).join("")}…"` : `"${value}"`;
}
