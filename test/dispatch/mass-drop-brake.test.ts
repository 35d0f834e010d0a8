import { describe, expect, it } from "vitest";
import { MassDropBrake, type SessionSpan } from "../../src/server/dispatch/timers/mass-drop-brake.js";

const INTERVAL = 1_000;
const settings = { windowMs: 3_000, minFleet: 10, holdMs: 12_000, establishedAfterMs: INTERVAL };
const T = 1_000_000;

/** Connected since `since`, heartbeated at `beat` (undefined: never since it connected). */
const span = (since: number, beat: number | undefined): SessionSpan => ({ connectTime: since, lastHeartbeatTime: beat });
const established = span(T - 10 * INTERVAL, T - 100);
const fleet = (n: number, s: SessionSpan) => Array.from({ length: n }, () => s);

describe("mass-drop brake", () => {
  it("engages when more than half of an established fleet of 10 or more drops within the window", () => {
    const brake = new MassDropBrake(settings);
    const lines = Array.from({ length: 7 }, (_, i) => brake.recordDrop(T + i, established, () => fleet(12 - 1 - i, established)));
    expect(lines.slice(0, 6)).toEqual(Array(6).fill(undefined));
    expect(lines[6]).toMatch(/7 of 12 established runners/);
    expect(brake.engaged(T + 6 + settings.holdMs)).toBe(true);
    expect(brake.engaged(T + 7 + settings.holdMs)).toBe(false);
  });

  it("does not count sessions that never heartbeated after connecting", () => {
    const brake = new MassDropBrake(settings);
    const silent = span(T - 10 * INTERVAL, T - 20 * INTERVAL); // last beat belongs to an earlier session
    for (let i = 0; i < 500; i++) expect(brake.recordDrop(T + i, silent, () => fleet(3, established))).toBeUndefined();
    expect(brake.engaged(T + 500)).toBe(false);
  });

  it("does not count sessions connected for less than one heartbeat interval, even if they beat", () => {
    const brake = new MassDropBrake(settings);
    const churning = (now: number) => span(now - INTERVAL + 1, now);
    for (let i = 0; i < 500; i++) expect(brake.recordDrop(T + i, churning(T + i), () => fleet(3, established))).toBeUndefined();
    expect(brake.engaged(T + 500)).toBe(false);
  });

  it("does not let churning sessions inflate the fleet either: connected ones count only when established", () => {
    const brake = new MassDropBrake(settings);
    const fresh = span(T, undefined);
    // 6 established drops out of 6 + 4 established still connected (and 100 fresh ones that do not count).
    const connected = () => [...fleet(4, established), ...fleet(100, fresh)];
    const lines = Array.from({ length: 6 }, (_, i) => brake.recordDrop(T + i, established, connected));
    expect(lines[5]).toMatch(/6 of 10 established runners/);
  });

  it("never engages for a fleet under the minimum, nor for a minority", () => {
    const small = new MassDropBrake(settings);
    for (let i = 0; i < 5; i++) expect(small.recordDrop(T + i, established, () => fleet(4 - i, established))).toBeUndefined();
    const large = new MassDropBrake(settings);
    for (let i = 0; i < 6; i++) expect(large.recordDrop(T + i, established, () => fleet(14, established))).toBeUndefined();
  });

  it("forgets drops older than the window", () => {
    const brake = new MassDropBrake(settings);
    for (let i = 0; i < 5; i++) brake.recordDrop(T, established, () => fleet(7, established));
    expect(brake.recordDrop(T + settings.windowMs + 1, established, () => fleet(6, established))).toBeUndefined();
  });
});
