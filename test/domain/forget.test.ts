import { describe, expect, it } from "vitest";
import { WorkerStatus } from "../../src/gen/runnerline/v1/worker_pb.js";
import { forgetDue, forgetWorker, silentSince } from "../../src/server/domain/forget.js";
import { toTimestamp } from "../../src/server/domain/time.js";
import {
  attachSession,
  detachSession,
  holdExactly,
  newWorkerRecord,
  recordWorkRequest,
  type WorkerRecord,
} from "../../src/server/domain/worker.js";
import { attemptFixture, T0 } from "../fixtures.js";

// Issue 18 §4: a runner killed with -9 stayed UNKNOWN for good; after --forget-after of silence it turns OFFLINE.
const liveness = { heartbeatGraceMs: 15_000 };
const HOUR = 3_600_000;
const opening = { labels: {}, capacity: 1, clientVersion: "t", peer: "p" };

/** A worker whose session was lost (kill -9) at T0 + 10 s. */
function lost(): WorkerRecord {
  const open = attachSession(newWorkerRecord("w-1", T0), opening, liveness, T0);
  const beat = { ...open, worker: { ...open.worker, lastHeartbeatTime: toTimestamp(T0 + 5_000) } };
  return detachSession(beat, false, liveness, T0 + 10_000);
}

describe("forgetting silent workers", () => {
  it("an UNKNOWN worker with no attempts is due forget-after past the last thing heard of it", () => {
    const record = lost();
    expect(record.worker.status).toBe(WorkerStatus.UNKNOWN);
    expect(silentSince(record)).toBe(T0 + 10_000);
    expect(forgetDue(record, HOUR)).toBe(T0 + 10_000 + HOUR);
    // A worker that never did anything but be created is silent since then.
    expect(silentSince(newWorkerRecord("w-2", T0))).toBe(T0);
  });

  it("turns OFFLINE with a reason once due, and not a moment before", () => {
    const record = lost();
    expect(forgetWorker(record, HOUR, liveness, T0 + 10_000 + HOUR - 1)).toBe(record);
    const forgotten = forgetWorker(record, HOUR, liveness, T0 + 10_000 + HOUR);
    expect(forgotten.worker.status).toBe(WorkerStatus.OFFLINE);
    expect(forgotten.worker.statusReason).toMatch(/^forgotten: UNKNOWN with no attempts and silent for 3600 s \(--forget-after 3600 s\)/);
    expect(forgotten.worker.version).toBeGreaterThan(record.worker.version);
  });

  it("leaves alone workers that hold attempts, hold a session, or are not UNKNOWN", () => {
    const holding = holdExactly(lost(), [attemptFixture({ attemptId: "at-1", workerId: "w-1" })], liveness, T0 + 10_000);
    expect(holding.worker.status).toBe(WorkerStatus.UNKNOWN);
    expect(forgetDue(holding, HOUR)).toBeUndefined();
    const open = attachSession(newWorkerRecord("w-1", T0), opening, liveness, T0);
    const late = { ...open, worker: { ...open.worker, status: WorkerStatus.UNKNOWN } };
    expect(forgetDue(late, HOUR)).toBeUndefined();
    const idle = recordWorkRequest(newWorkerRecord("w-1", T0), liveness, T0);
    expect(idle.worker.status).toBe(WorkerStatus.IDLE);
    expect(forgetWorker(idle, HOUR, liveness, T0 + 2 * HOUR)).toBe(idle);
  });

  it("the reason goes when the worker is heard from again", () => {
    const forgotten = forgetWorker(lost(), HOUR, liveness, T0 + 2 * HOUR);
    const back = attachSession(forgotten, opening, liveness, T0 + 3 * HOUR);
    expect(back.worker.status).toBe(WorkerStatus.IDLE);
    expect(back.worker.statusReason).toBe("");
  });
});
