// When a runner counts as quarantined, in one place for the badge, the
// status filter and the detail; unit-tested in test/web/table-query.test.ts.
import type { Timestamp } from "@bufbuild/protobuf/wkt";

/** The ListWorkers filter (AIP-160) for runners quarantined now; the server reads `now` as its clock. */
export const QUARANTINED_FILTER = "quarantine_until > now";

export function timestampMs(timestamp: Timestamp | undefined): number | undefined {
  return timestamp === undefined ? undefined : Number(timestamp.seconds) * 1000 + Math.floor(timestamp.nanos / 1e6);
}

/** Quarantined while quarantine_until is in the future (the server keeps it set through probation). */
export function isQuarantined(worker: { quarantineUntil?: Timestamp }, nowMs: number): boolean {
  const until = timestampMs(worker.quarantineUntil);
  return until !== undefined && until > nowMs;
}
