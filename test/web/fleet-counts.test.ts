import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { FleetSummarySchema } from "../../src/gen/runnerline/v1/worker_pb.js";
import { durationMs, fleetCountsFromSummary } from "../../web/src/fleet-counts.js";

describe("header counts from GetFleetSummary", () => {
  it("maps every number the header shows, preparing counted as running", () => {
    const summary = create(FleetSummarySchema, {
      workers: { total: 9, idle: 3, busy: 2, unknown: 1, offline: 3, connected: 6, quarantined: 1, cordoned: 2 },
      rollouts: { total: 20, queuing: 4, preparing: 1, running: 2, requeuing: 1, succeeded: 7, failed: 3, cancelled: 2 },
      queueDepth: 5,
      oldestQueuedAge: { seconds: 75n, nanos: 500_000_000 },
      unroutableQueued: 2,
    });
    expect(fleetCountsFromSummary(summary)).toEqual({
      idle: 3,
      busy: 2,
      unknown: 1,
      offline: 3,
      quarantined: 1,
      cordoned: 2,
      queueDepth: 5,
      oldestQueuedMs: 75_500,
      unroutable: 2,
      running: 3,
      succeeded: 7,
      failed: 3,
      cancelled: 2,
    });
  });

  it("an empty queue has no oldest age, and a missing summary counts nothing", () => {
    expect(fleetCountsFromSummary(create(FleetSummarySchema, {})).oldestQueuedMs).toBeUndefined();
    expect(fleetCountsFromSummary(undefined)).toMatchObject({ idle: 0, queueDepth: 0, quarantined: 0, oldestQueuedMs: undefined });
    expect(durationMs({ seconds: 2n, nanos: 1_999_999 } as never)).toBe(2_001);
  });
});
