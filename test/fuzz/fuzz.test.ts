import { describe, expect, it } from "vitest";
import { fuzz } from "./harness.js";

/** Kept small for `npm test`; `npm run fuzz -- --cases N` runs long. */
const CASES = Number(process.env.RUNNERLINE_FUZZ_CASES ?? 500);

describe("fuzz: random and damaged requests on every RPC, the session stream and raw gRPC framing", () => {
  it(`${CASES} cases break no invariant`, { timeout: 120_000 }, async () => {
    const report = await fuzz({ cases: CASES, restartEvery: 100 });
    if (report.pending.size > 0) {
      console.log(`fuzz: defects pending the bad-input merge (issue 14): ${JSON.stringify(Object.fromEntries(report.pending))}`);
    }
    expect(report.findings).toEqual([]);
    expect(report.cases).toBe(CASES);
  });
});
