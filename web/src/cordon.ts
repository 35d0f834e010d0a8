// When a runner counts as cordoned or draining (an operator keeps it from new
// work: WorkerService.CordonWorker, DrainWorker), in one place for the badge,
// the filter and the detail; unit-tested in test/web/table-query.test.ts.
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { formatAbsolute } from "./format.js";
import { timestampMs } from "./quarantine.js";

/** The ListWorkers filter (AIP-160) for cordoned runners, draining ones included. */
export const CORDONED_FILTER = "cordoned = true";

export interface CordonFields {
  cordoned: boolean;
  draining: boolean;
  cordonReason: string;
  cordonedBy: string;
  cordonTime?: Timestamp;
}

/** "DRAINING" while its runner is asked to finish and exit, "CORDONED" while kept from new work, else undefined. */
export function cordonLabel(worker: CordonFields): "DRAINING" | "CORDONED" | undefined {
  return worker.draining ? "DRAINING" : worker.cordoned ? "CORDONED" : undefined;
}

/** "disk swap · by ops · since 2026-03-12 10:04:00 UTC": why, who and when, for the badge's tooltip and the detail. */
export function cordonSummary(worker: CordonFields): string {
  const parts = [worker.cordonReason || "no reason given"];
  if (worker.cordonedBy !== "") parts.push(`by ${worker.cordonedBy}`);
  parts.push(`since ${formatAbsolute(timestampMs(worker.cordonTime))}`);
  return parts.join(" · ");
}
