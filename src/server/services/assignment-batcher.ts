import { create, toBinary } from "@bufbuild/protobuf";
import {
  type Assignment,
  AssignmentSchema,
  type SessionResponse,
  SessionResponseSchema,
} from "../../gen/runnerline/v1/runner_pb.js";

/** Room for the SessionResponse and AssignmentBatch framing around the assignments (tags and lengths). */
const BATCH_FRAMING_BYTES = 16;
/** Each assignment inside a batch: one tag byte and a length of at most 5 bytes. */
const ENTRY_FRAMING_BYTES = 6;

/**
 * Hello.accepts_assignment_batches on the server: the one way out of a
 * session, so that nothing overtakes an assignment held back for a batch.
 * The coordinator sends a session its assignments one by one, in a loop
 * after each commit; once batching is on, those of one such synchronous run
 * leave together, as one AssignmentBatch, in a microtask after it. Any other
 * message first sends what is pending (a Cancel or Drain sent after an
 * assignment comes after it). A lone assignment leaves as a plain
 * Assignment; with batching off every message passes straight through.
 */
export class AssignmentBatcher {
  private batching = false;
  private pending: Assignment[] = [];

  /**
   * @param push hands a message to the session's stream.
   * @param maxBatchBytes a batch is cut to stay under this many encoded bytes
   *   (what a runner must accept anyway: the response bound, Limits.maxResponseBytes).
   */
  constructor(
    private readonly push: (message: SessionResponse) => void,
    private readonly maxBatchBytes: number,
  ) {}

  /** From now on (the runner accepts batches), assignments of one synchronous run leave together. */
  startBatching(): void {
    this.batching = true;
  }

  send(message: SessionResponse): void {
    if (!this.batching || message.message.case !== "assignment") {
      this.flush();
      this.push(message);
      return;
    }
    if (this.pending.length === 0) queueMicrotask(() => this.flush());
    this.pending.push(message.message.value);
  }

  /** Sends what is pending now; a no-op when nothing is. */
  flush(): void {
    if (this.pending.length === 0) return;
    const pending = this.pending;
    this.pending = [];
    const groups = pending.length === 1 ? [pending] : this.cut(pending);
    for (const group of groups) {
      this.push(group.length === 1 ? assignmentMessage(group[0]!) : batchMessage(group));
    }
  }

  /** Consecutive groups in order, each within maxBatchBytes; an assignment too large for any batch goes alone. */
  private cut(assignments: Assignment[]): Assignment[][] {
    const groups: Assignment[][] = [];
    let group: Assignment[] = [];
    let bytes = BATCH_FRAMING_BYTES;
    for (const assignment of assignments) {
      const size = toBinary(AssignmentSchema, assignment).byteLength + ENTRY_FRAMING_BYTES;
      if (group.length > 0 && bytes + size > this.maxBatchBytes) {
        groups.push(group);
        group = [];
        bytes = BATCH_FRAMING_BYTES;
      }
      group.push(assignment);
      bytes += size;
    }
    groups.push(group);
    return groups;
  }
}

const assignmentMessage = (value: Assignment) => create(SessionResponseSchema, { message: { case: "assignment", value } });

const batchMessage = (assignments: Assignment[]) =>
  create(SessionResponseSchema, { message: { case: "assignmentBatch", value: { assignments } } });
