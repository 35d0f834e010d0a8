import { describe, expect, it } from "vitest";
import { QUOTE_MAX_CHARS, quote } from "../../src/common/quote.js";

describe("quote", () => {
  it("repeats short values whole", () => {
    expect(quote("rollout-1")).toBe('"rollout-1"');
    expect(quote("x".repeat(QUOTE_MAX_CHARS))).toBe(`"${"x".repeat(QUOTE_MAX_CHARS)}"`);
  });

  it("cuts long values at the limit with an ellipsis", () => {
    expect(quote("x".repeat(100_000))).toBe(`"${"x".repeat(QUOTE_MAX_CHARS)}…"`);
  });

  it("counts code points and never splits a surrogate pair, however long the value", () => {
    const emoji = "😀";
    expect(quote(emoji.repeat(QUOTE_MAX_CHARS))).toBe(`"${emoji.repeat(QUOTE_MAX_CHARS)}"`);
    expect(quote(emoji.repeat(100_000))).toBe(`"${emoji.repeat(QUOTE_MAX_CHARS)}…"`);
  });
});
