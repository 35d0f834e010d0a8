import { describe, expect, it } from "vitest";
import { HeartbeatGate } from "../../src/server/services/heartbeat-gate.js";
import { SessionCount } from "../../src/server/services/session-count.js";

describe("HeartbeatGate", () => {
  it("applies a burst of twice the rate, coalesces beyond it, refuses a flood, and recovers", () => {
    let now = 0;
    const gate = new HeartbeatGate(2, () => now);
    const admit = (n: number) => Array.from({ length: n }, () => gate.admit("w"));
    expect(admit(4)).toEqual(["apply", "apply", "apply", "apply"]);
    expect(admit(20)).toEqual(Array(20).fill("coalesce"));
    expect(gate.admit("w")).toBe("refuse");
    expect(gate.admit("other")).toBe("apply");
    now += 500; // one token back at 2 per second
    expect(gate.admit("w")).toBe("apply");
    now += 1_000;
    expect(admit(2)).toEqual(["apply", "apply"]);
    expect(gate.admit("w")).toBe("coalesce");
  });

  it("lets everything through at rate 0", () => {
    const gate = new HeartbeatGate(0, () => 0);
    expect(Array.from({ length: 1000 }, () => gate.admit("w")).every((a) => a === "apply")).toBe(true);
  });
});

describe("SessionCount", () => {
  it("bounds sessions per connection and in total, and uncounts each once", () => {
    const count = new SessionCount({ maxSessions: 3, maxSessionsPerConnection: 2 });
    const a1 = count.open("a");
    count.open("a");
    expect(() => count.open("a")).toThrow(/this connection has 2 open sessions/);
    count.open("b");
    expect(() => count.open("c")).toThrow(/3 open sessions, its bound/);
    a1();
    a1();
    expect(() => count.open("a")).not.toThrow();
    expect(() => count.open("d")).toThrow(/its bound/);
  });
});
