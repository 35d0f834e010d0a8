/** Milliseconds per unit of a duration written as text: the SDK's plain-JSON durations and the CLI's flags. */
const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Milliseconds of "500ms", "30s", "5m", "2h", "1d" (a number with one unit), or of a bare number in `bareUnit`
 * (the SDK reads one as milliseconds, the CLI's flags as seconds); NaN when the text is none of these.
 */
export function durationTextMs(text: string, bareUnit: "ms" | "s"): number {
  const match = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  return match === null ? NaN : Number(match[1]) * UNIT_MS[match[2] ?? bareUnit]!;
}

export const DAY_MS = UNIT_MS.d!;
