/** Longest part of a caller's value that an error message repeats back, in code points. */
export const QUOTE_MAX_CHARS = 128;

/**
 * A caller-supplied value as an error message repeats it: in double quotes,
 * cut after QUOTE_MAX_CHARS code points with "…". Messages travel in the
 * grpc-message trailer, which shares the client's metadata limit (8 KiB by
 * default) with everything else; an unbounded echo there fails the call and,
 * with some clients, others on the same connection.
 */
export function quote(value: string): string {
  // A code point is at most two UTF-16 units, so this prefix holds more than the limit whenever the value does.
  const chars = Array.from(value.slice(0, 2 * QUOTE_MAX_CHARS + 2));
  return chars.length > QUOTE_MAX_CHARS ? `"${chars.slice(0, QUOTE_MAX_CHARS).join("")}…"` : `"${value}"`;
}
