/**
 * The PostgreSQL store's turn queue (src/server/store/postgres/turn.ts), without a database: operations of one
 * event-loop turn run as one turn, at most `maxInFlight` turns are in flight (one by default), and what arrives
 * meanwhile gathers into the next.
 */
import { describe, expect, it } from "vitest";
import { type TurnOperation, TurnQueue } from "../../src/server/store/postgres/turn.js";

/** A stand-in operation: only its identity matters to the queue. */
const rejected: unknown[] = [];
const op = (n: number) =>
  ({ kind: "worker", workerId: `w-${n}`, n, done: { resolve: () => undefined, reject: (error: unknown) => rejected.push(error) } }) as unknown as TurnOperation & {
    n: number;
  };
const nextTurn = () => new Promise((resolve) => setImmediate(resolve));
/** Several event-loop turns: a finished turn's callback, then the next turn's start. */
const settleTurns = async () => {
  await nextTurn();
  await nextTurn();
};

/** A queue whose turns stay on "the database" until their finish() is called; `turns` lists each turn's operations. */
function heldQueue(maxInFlight?: number) {
  const turns: number[][] = [];
  const finish: (() => void)[] = [];
  const queue = new TurnQueue((ops) => {
    turns.push(ops.map((o) => (o as ReturnType<typeof op>).n));
    return new Promise<void>((resolve) => finish.push(resolve));
  }, maxInFlight);
  return { queue, turns, finish };
}

describe("TurnQueue", () => {
  it("by default runs one turn at a time: what arrives while it is on the database gathers into the next", async () => {
    const { queue, turns, finish } = heldQueue();
    queue.submit(op(1));
    queue.submit(op(2));
    await nextTurn();
    expect(turns).toEqual([[1, 2]]);
    queue.submit(op(3));
    await nextTurn();
    queue.submit(op(4));
    await nextTurn();
    expect(turns).toEqual([[1, 2]]); // 3 and 4 wait for the first turn, together
    finish[0]!();
    await settleTurns();
    expect(turns).toEqual([[1, 2], [3, 4]]);
    finish[1]!();
    await settleTurns();
    expect(turns).toHaveLength(2); // nothing more was asked for: no empty turn
  });

  it("runs one event-loop turn's operations together, two turns at most at once when allowed two, and gathers the rest meanwhile", async () => {
    const { queue, turns, finish } = heldQueue(2);
    queue.submit(op(1));
    queue.submit(op(2));
    await nextTurn();
    expect(turns).toEqual([[1, 2]]);
    queue.submit(op(3));
    await nextTurn();
    expect(turns).toEqual([[1, 2], [3]]); // a second turn while the first is on the database
    queue.submit(op(4));
    queue.submit(op(5));
    await nextTurn();
    expect(turns).toHaveLength(2); // two in flight: 4 and 5 wait, together
    finish[0]!();
    await settleTurns();
    expect(turns).toEqual([[1, 2], [3], [4, 5]]);
    finish[1]!();
    finish[2]!();
    await settleTurns();
    expect(turns).toHaveLength(3); // nothing more was asked for: no empty turn
  });

  it("keeps going after a turn that failed, whose callers hear why", async () => {
    const turns: number[][] = [];
    const queue = new TurnQueue(async (ops) => {
      turns.push(ops.map((o) => (o as ReturnType<typeof op>).n));
      if (turns.length === 1) throw new Error("the database went away");
    }, 1);
    queue.submit(op(1));
    await nextTurn();
    queue.submit(op(2));
    for (let i = 0; i < 4; i++) await nextTurn();
    expect(turns).toEqual([[1], [2]]);
    expect(rejected.map(String)).toEqual(["Error: the database went away"]);
  });
});
