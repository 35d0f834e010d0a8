import { describe, expect, it } from "vitest";
import { durationTextMs } from "../../src/common/duration-text.js";
import { duration } from "../../src/cli/serve-command.js";
import { durationMs } from "../../src/client/duration.js";

// One reading of "30s", "5m", "7d" for the SDK's plain-JSON durations and the CLI's flags; they differ only in
// what a bare number means (milliseconds in the SDK, seconds on the command line).
describe("durations written as text", () => {
  it("reads a number with one unit, and a bare number in the caller's unit", () => {
    expect(durationTextMs("500ms", "s")).toBe(500);
    expect(durationTextMs(" 1.5h ", "ms")).toBe(5_400_000);
    expect(durationTextMs("7d", "s")).toBe(604_800_000);
    expect(durationTextMs("45", "s")).toBe(45_000);
    expect(durationTextMs("45", "ms")).toBe(45);
    expect(durationTextMs("5 minutes", "s")).toBeNaN();
    expect(durationTextMs("-3s", "s")).toBeNaN();
  });

  it("is what the CLI's flags and the SDK both use", () => {
    expect(duration("--retain", "12h")).toBe(durationMs("timeout", "12h"));
    expect(duration("--retain", "30")).toBe(30_000);
    expect(durationMs("timeout", "30")).toBe(30);
    expect(() => duration("--retain", "0s")).toThrow(/--retain must be a positive duration/);
  });
});
