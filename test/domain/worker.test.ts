import { describe, expect, it } from "vitest";
import { WorkerStatus } from "../../src/gen/runnerline/v1/worker_pb.js";
import { msOf, toTimestamp } from "../../src/server/domain/time.js";
import {
  type Attachment,
  attachSession,
  deriveWorkerStatus,
  detachSession,
  holdAttempt,
  holdAttempts,
  newWorkerRecord,
  recordHeartbeat,
  recordWorkRequest,
  releaseAttempt,
  type WorkerRecord,
} from "../../src/server/domain/worker.js";
import { attemptFixture, T0 } from "../fixtures.js";

const W = WorkerStatus;
const liveness = { heartbeatGraceMs: 100 };
const opening = { labels: {}, capacity: 1, clientVersion: "test", peer: "127.0.0.1" };

function record(attachment: Attachment, fields: { holds?: boolean; suspect?: boolean; lastBeat?: number; lastAsk?: number }) {
  const base = newWorkerRecord("w-1", T0);
  return {
    attachment,
    suspect: fields.suspect ?? false,
    epoch: 0,
    worker: {
      ...base.worker,
      connected: attachment === "open",
      connectTime: toTimestamp(T0),
      currentAttemptIds: fields.holds ? ["at-1"] : [],
      currentRolloutIds: fields.holds ? ["ro-1"] : [],
      lastHeartbeatTime: fields.lastBeat === undefined ? undefined : toTimestamp(fields.lastBeat),
      lastDequeueTime: fields.lastAsk === undefined ? undefined : toTimestamp(fields.lastAsk),
    },
  } satisfies WorkerRecord;
}

describe("worker status is derived from facts (DESIGN §3)", () => {
  const now = T0 + 1_000;
  const fresh = now - 10;
  const late = now - 101;
  const cases: [string, WorkerRecord, WorkerStatus][] = [
    ["open, fresh beats, holds nothing", record("open", { lastBeat: fresh }), W.IDLE],
    ["open, fresh beats, holds work", record("open", { lastBeat: fresh, holds: true }), W.BUSY],
    ["open, late beats, holds work", record("open", { lastBeat: late, holds: true }), W.UNKNOWN],
    ["open, late beats, holds nothing", record("open", { lastBeat: late }), W.UNKNOWN],
    ["open, fresh, just lost an attempt", record("open", { lastBeat: fresh, suspect: true }), W.UNKNOWN],
    ["open, fresh, lost one but holds another", record("open", { lastBeat: fresh, suspect: true, holds: true }), W.BUSY],
    ["stream lost, holds work", record("lost", { lastBeat: fresh, holds: true }), W.UNKNOWN],
    ["stream lost, holds nothing", record("lost", { lastBeat: fresh }), W.UNKNOWN],
    ["left cleanly", record("left", { lastBeat: fresh }), W.OFFLINE],
    ["left while still holding work", record("left", { holds: true }), W.UNKNOWN],
    ["unary-only, never asked for work", record("none", { lastBeat: fresh }), W.UNKNOWN],
    ["unary-only, asked recently", record("none", { lastAsk: fresh }), W.IDLE],
    ["unary-only, asked long ago", record("none", { lastAsk: late }), W.UNKNOWN],
    ["unary-only, asked long ago but beats", record("none", { lastAsk: late, lastBeat: fresh }), W.IDLE],
    ["unary-only, holds work", record("none", { lastAsk: late, holds: true }), W.BUSY],
  ];
  it.each(cases)("%s → %s", (_, facts, expected) => {
    expect(WorkerStatus[deriveWorkerStatus(facts, liveness, now)]).toBe(WorkerStatus[expected]);
  });
});

describe("worker transitions", () => {
  it("a heartbeat for an unseen worker leaves it UNKNOWN with stats and time stamp", () => {
    const beat = recordHeartbeat(newWorkerRecord("w-1", T0), { extraStats: { cpu: 0.5 } }, liveness, T0 + 1);
    expect(beat.worker.status).toBe(W.UNKNOWN);
    expect(beat.worker.extraStats).toEqual({ cpu: 0.5 });
    expect(msOf(beat.worker.lastHeartbeatTime)).toBe(T0 + 1);
  });

  it("a heartbeat without stats keeps the previous ones and time never goes backwards", () => {
    const first = recordHeartbeat(newWorkerRecord("w-1", T0), { extraStats: { cpu: 0.5 } }, liveness, T0 + 10);
    const second = recordHeartbeat(first, {}, liveness, T0 + 5);
    expect(second.worker.extraStats).toEqual({ cpu: 0.5 });
    expect(msOf(second.worker.lastHeartbeatTime)).toBe(T0 + 10);
  });

  it("goes IDLE → BUSY → IDLE with its time stamps, and a lost attempt leaves it UNKNOWN until it asks again", () => {
    let r = attachSession(newWorkerRecord("w-1", T0), opening, liveness, T0);
    r = recordWorkRequest(r, liveness, T0 + 1);
    expect(r.worker.status).toBe(W.IDLE);
    expect(msOf(r.worker.lastIdleTime)).toBe(T0);
    expect(msOf(r.worker.lastDequeueTime)).toBe(T0 + 1);
    const attempt = attemptFixture();
    r = holdAttempt(r, attempt, liveness, T0 + 2);
    expect(r.worker).toMatchObject({ status: W.BUSY, currentAttemptIds: ["at-1"], currentRolloutIds: ["ro-1"] });
    expect(msOf(r.worker.lastBusyTime)).toBe(T0 + 2);
    r = releaseAttempt(r, attempt, false, liveness, T0 + 3);
    expect(r.worker).toMatchObject({ status: W.IDLE, currentAttemptIds: [], currentRolloutIds: [] });
    expect(msOf(r.worker.lastIdleTime)).toBe(T0 + 3);
    r = holdAttempt(r, attempt, liveness, T0 + 4);
    r = releaseAttempt(r, attempt, true, liveness, T0 + 5);
    expect(r.worker.status).toBe(W.UNKNOWN);
    r = recordWorkRequest(r, liveness, T0 + 6);
    expect(r.worker.status).toBe(W.IDLE);
  });

  it("a stale release for an attempt it no longer holds changes nothing (upstream quirk fixed)", () => {
    let r = attachSession(newWorkerRecord("w-1", T0), opening, liveness, T0);
    r = holdAttempt(r, attemptFixture({ attemptId: "at-2" }), liveness, T0 + 1);
    expect(releaseAttempt(r, attemptFixture({ attemptId: "at-1" }), false, liveness, T0 + 2)).toBe(r);
  });

  it("detaching: cleanly → OFFLINE, lost → UNKNOWN", () => {
    const open = attachSession(newWorkerRecord("w-1", T0), opening, liveness, T0);
    expect(detachSession(open, true, liveness, T0 + 1).worker).toMatchObject({ status: W.OFFLINE, connected: false });
    expect(detachSession(open, false, liveness, T0 + 1).worker).toMatchObject({ status: W.UNKNOWN, connected: false });
  });
});

describe("holdAttempts (a claim of several rollouts)", () => {
  it("holds them in order in one change, the same state as holding them one by one", () => {
    const start = record("open", { lastBeat: T0, holds: true });
    const a2 = attemptFixture({ attemptId: "at-2", rolloutId: "ro-2" });
    const a3 = attemptFixture({ attemptId: "at-3", rolloutId: "ro-3" });
    const together = holdAttempts(start, [a2, a3], liveness, T0 + 1);
    const oneByOne = holdAttempt(holdAttempt(start, a2, liveness, T0 + 1), a3, liveness, T0 + 1);
    expect(together.worker.currentAttemptIds).toEqual(["at-1", "at-2", "at-3"]);
    expect(together.worker.currentRolloutIds).toEqual(["ro-1", "ro-2", "ro-3"]);
    expect(together.worker.currentAttemptIds).toEqual(oneByOne.worker.currentAttemptIds);
    expect(together.worker.status).toBe(oneByOne.worker.status);
    // One change, one version.
    expect(together.worker.version).toBe(start.worker.version + 1n);
    // The record it was given is not touched.
    expect(start.worker.currentAttemptIds).toEqual(["at-1"]);
  });

  it("skips attempts it holds already, or named twice; nothing new changes nothing", () => {
    const start = record("open", { lastBeat: T0, holds: true });
    const held = attemptFixture({ attemptId: "at-1", rolloutId: "ro-1" });
    const a2 = attemptFixture({ attemptId: "at-2", rolloutId: "ro-2" });
    expect(holdAttempts(start, [held], liveness, T0 + 1)).toBe(start);
    expect(holdAttempts(start, [], liveness, T0 + 1)).toBe(start);
    expect(holdAttempts(start, [held, a2, a2], liveness, T0 + 1).worker.currentAttemptIds).toEqual(["at-1", "at-2"]);
  });
});
