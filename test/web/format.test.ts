import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { formatAbsolute, formatBytes, formatDuration, formatPercent, formatRelative, jsonOfValue, percentOf, previewJson } from "../../web/src/format.js";

const NOW = Date.UTC(2026, 11, 3, 3, 16, 21);

describe("formatRelative", () => {
  it.each([
    [undefined, "never"],
    [NOW, "just now"],
    [NOW - 999, "just now"],
    [NOW - 12_000, "12 s ago"],
    [NOW - 59_999, "59 s ago"],
    [NOW - 60_000, "1 min ago"],
    [NOW - 3_599_000, "59 min ago"],
    [NOW - 3_600_000, "1 h ago"],
    [NOW - 86_400_000 * 2, "2 d ago"],
    [NOW + 4_000, "in 4 s"],
  ])("%s → %s", (time, text) => {
    expect(formatRelative(time, NOW)).toBe(text);
  });
});

describe("formatting", () => {
  it("writes absolute times in UTC, to the second", () => {
    expect(formatAbsolute(NOW + 123)).toBe("2026-12-03 03:16:21 UTC");
    expect(formatAbsolute(undefined)).toBe("never");
  });

  it.each([
    [120, "120 ms"],
    [5_240, "5.2 s"],
    [42_000, "42 s"],
    [184_000, "3 min 4 s"],
    [3_720_000, "1 h 2 min"],
    [90_000_000, "1 d 1 h"],
    [undefined, "—"],
    [-5, "—"],
  ])("durations: %s → %s", (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  it.each([
    [512, "512 B"],
    [1536, "1.50 KiB"],
    [80n * 1024n ** 3n, "80.0 GiB"],
    [256n * 1024n ** 3n, "256 GiB"],
    [undefined, "—"],
  ])("bytes: %s → %s", (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });

  it("percentages, and shares of an unknown total", () => {
    expect(formatPercent(41.6)).toBe("42 %");
    expect(formatPercent(undefined)).toBe("—");
    expect(percentOf(1n, 4n)).toBe(25);
    expect(percentOf(5, 0)).toBeUndefined();
    expect(percentOf(9, 4)).toBe(100);
  });

  it("previews JSON on one line, cut with an ellipsis", () => {
    expect(previewJson({ reward: 1 })).toBe('{"reward":1}');
    expect(previewJson({ text: "x".repeat(100) }, 20)).toBe('{"text":"xxxxxxxxxx…');
    expect(previewJson(undefined)).toBe("");
    // A result is a google.protobuf.Value: previewed as the JSON it stands for.
    expect(previewJson(jsonOfValue(fromJson(ValueSchema, { reward: 0.75, tags: ["a"] })))).toBe('{"reward":0.75,"tags":["a"]}');
    expect(jsonOfValue(fromJson(ValueSchema, null))).toBeNull();
    expect(jsonOfValue(undefined)).toBeUndefined();
  });
});
