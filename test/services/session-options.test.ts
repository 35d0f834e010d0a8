/**
 * The two pieces behind the session options of runner.proto, in process: the
 * AssignmentBatcher (what leaves a session, in which order and grouping) and
 * TerminalCredits (which terminal updates return a credit). The same rules
 * over real sockets: test/e2e/session-options.test.ts.
 */
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { type SessionResponse, SessionResponseSchema } from "../../src/gen/runnerline/v1/runner_pb.js";
import { AssignmentBatcher } from "../../src/server/services/assignment-batcher.js";
import { MAX_UNREPORTED_CANCELLED, TerminalCredits } from "../../src/server/services/terminal-credits.js";

const assignment = (attemptId: string, input = "") =>
  create(SessionResponseSchema, {
    message: {
      case: "assignment",
      value: { rollout: { rolloutId: `ro-${attemptId}`, input: { kind: { case: "stringValue", value: input } } }, attempt: { attemptId } },
    },
  });
const cancel = (attemptId: string) => create(SessionResponseSchema, { message: { case: "cancel", value: { attemptId, reason: "test" } } });
const welcome = (resumedAttemptIds: string[]) =>
  create(SessionResponseSchema, { message: { case: "welcome", value: { sessionId: "se-1", resumedAttemptIds } } });

/** Each message as its case and the attempt ids it carries, e.g. "assignmentBatch a1 a2". */
function describeMessage(message: SessionResponse): string {
  const m = message.message;
  switch (m.case) {
    case "assignment":
      return `assignment ${m.value.attempt!.attemptId}`;
    case "assignmentBatch":
      return `assignmentBatch ${m.value.assignments.map((a) => a.attempt!.attemptId).join(" ")}`;
    case "cancel":
      return `cancel ${m.value.attemptId}`;
    default:
      return m.case ?? "empty";
  }
}

function recordingBatcher(maxBatchBytes = 4 * 1024 * 1024) {
  const pushed: string[] = [];
  const batcher = new AssignmentBatcher((message) => pushed.push(describeMessage(message)), maxBatchBytes);
  return { batcher, pushed };
}

const microtasks = () => new Promise<void>((resolve) => queueMicrotask(resolve));

describe("AssignmentBatcher", () => {
  it("passes everything straight through until batching starts", () => {
    const { batcher, pushed } = recordingBatcher();
    batcher.send(assignment("a1"));
    batcher.send(assignment("a2"));
    expect(pushed).toEqual(["assignment a1", "assignment a2"]);
  });

  it("sends the assignments of one synchronous run as one batch after it, and a lone one as a plain Assignment", async () => {
    const { batcher, pushed } = recordingBatcher();
    batcher.startBatching();
    batcher.send(assignment("a1"));
    batcher.send(assignment("a2"));
    batcher.send(assignment("a3"));
    expect(pushed).toEqual([]);
    await microtasks();
    expect(pushed).toEqual(["assignmentBatch a1 a2 a3"]);
    batcher.send(assignment("a4"));
    await microtasks();
    expect(pushed).toEqual(["assignmentBatch a1 a2 a3", "assignment a4"]);
  });

  it("lets nothing overtake a pending assignment: another message sends the pending ones first", async () => {
    const { batcher, pushed } = recordingBatcher();
    batcher.startBatching();
    batcher.send(assignment("a1"));
    batcher.send(assignment("a2"));
    batcher.send(cancel("a1"));
    batcher.send(assignment("a3"));
    await microtasks();
    expect(pushed).toEqual(["assignmentBatch a1 a2", "cancel a1", "assignment a3"]);
  });

  it("cuts a batch to stay under the byte bound, in order; an assignment larger than the bound goes alone", async () => {
    const { batcher, pushed } = recordingBatcher(200);
    batcher.startBatching();
    for (const id of ["a1", "a2", "a3"]) batcher.send(assignment(id, "x".repeat(60)));
    batcher.send(assignment("big", "x".repeat(500)));
    batcher.send(assignment("a4"));
    batcher.flush();
    expect(pushed).toEqual(["assignmentBatch a1 a2", "assignment a3", "assignment big", "assignment a4"]);
  });
});

describe("TerminalCredits", () => {
  it("returns one credit for the first SUCCEEDED or FAILED update of an attempt the session holds", () => {
    const credits = new TerminalCredits();
    credits.sent(welcome(["resumed"]));
    credits.sent(assignment("a1"));
    credits.sent(create(SessionResponseSchema, { message: { case: "assignmentBatch", value: { assignments: [{ attempt: { attemptId: "a2" } }] } } }));

    expect(credits.returnsCredit("a1", AttemptStatus.RUNNING)).toBe(false);
    expect(credits.returnsCredit("a1", AttemptStatus.UNSPECIFIED)).toBe(false);
    expect(credits.returnsCredit("a1", AttemptStatus.SUCCEEDED)).toBe(true);
    expect(credits.returnsCredit("a1", AttemptStatus.SUCCEEDED)).toBe(false);
    expect(credits.returnsCredit("a1", AttemptStatus.FAILED)).toBe(false);
    expect(credits.returnsCredit("a2", AttemptStatus.FAILED)).toBe(true);
    expect(credits.returnsCredit("resumed", AttemptStatus.SUCCEEDED)).toBe(true);
    expect(credits.returnsCredit("never-assigned", AttemptStatus.SUCCEEDED)).toBe(false);
  });

  it("keeps a cancelled attempt's credit for its report, remembering the latest cancelled ones up to the bound", () => {
    const credits = new TerminalCredits();
    const ids = Array.from({ length: MAX_UNREPORTED_CANCELLED + 1 }, (_, i) => `a${i}`);
    for (const id of ids) credits.sent(assignment(id));
    credits.sent(cancel("a1"));
    expect(credits.returnsCredit("a1", AttemptStatus.FAILED)).toBe(true);

    for (const id of ids) credits.sent(cancel(id));
    // a1 was reported, so the other 1024 cancelled attempts fit the bound: a0 is still remembered.
    expect(credits.returnsCredit("a0", AttemptStatus.FAILED)).toBe(true);
    const more = Array.from({ length: MAX_UNREPORTED_CANCELLED }, (_, i) => `b${i}`);
    for (const id of more) credits.sent(assignment(id));
    for (const id of more) credits.sent(cancel(id));
    expect(credits.returnsCredit("a2", AttemptStatus.FAILED)).toBe(false);
    expect(credits.returnsCredit("b0", AttemptStatus.FAILED)).toBe(true);
    // Attempts still running are never forgotten, however many others are cancelled.
    credits.sent(assignment("running"));
    for (let i = 0; i < 2 * MAX_UNREPORTED_CANCELLED; i++) {
      credits.sent(assignment(`c${i}`));
      credits.sent(cancel(`c${i}`));
    }
    expect(credits.returnsCredit("running", AttemptStatus.SUCCEEDED)).toBe(true);
  });
});
