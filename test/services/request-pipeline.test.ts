/**
 * The order of one session's requests (src/server/services/request-pipeline.ts):
 * updates about different attempts run side by side, updates of one attempt
 * in turn, and every other request between all earlier and all later ones.
 */
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { type SessionRequest, SessionRequestSchema } from "../../src/gen/runnerline/v1/runner_pb.js";
import { MAX_UPDATES_IN_FLIGHT, RequestPipeline } from "../../src/server/services/request-pipeline.js";

const update = (attemptId: string): SessionRequest =>
  create(SessionRequestSchema, { message: { case: "attemptUpdate", value: { attemptId } } });
const ready = (): SessionRequest => create(SessionRequestSchema, { message: { case: "ready", value: { slots: 1 } } });
const nameOf = (r: SessionRequest) => (r.message.case === "attemptUpdate" ? r.message.value.attemptId : (r.message.case ?? ""));

/** A pipeline whose requests finish when the test says so; `log` records starts and ends. */
function harness() {
  const log: string[] = [];
  const finish = new Map<string, Array<(error?: Error) => void>>();
  const failures: unknown[] = [];
  const pipeline = new RequestPipeline(
    (request) =>
      new Promise<void>((resolve, reject) => {
        const name = nameOf(request);
        log.push(`start ${name}`);
        const list = finish.get(name) ?? [];
        list.push((error) => {
          log.push(`end ${name}`);
          if (error) reject(error);
          else resolve();
        });
        finish.set(name, list);
      }),
    (error) => failures.push(error),
  );
  const end = async (name: string, error?: Error) => {
    finish.get(name)!.shift()!(error);
    await new Promise((r) => setImmediate(r));
  };
  return { pipeline, log, end, failures };
}

describe("RequestPipeline", () => {
  it("starts updates about different attempts at once, without waiting for the earlier ones", async () => {
    const { pipeline, log, end } = harness();
    await pipeline.push(update("a"));
    await pipeline.push(update("b"));
    await pipeline.push(update("c"));
    expect(log).toEqual(["start a", "start b", "start c"]);
    await end("b");
    await end("a");
    await end("c");
    await pipeline.idle();
  });

  it("runs the updates of one attempt one after the other, in arrival order", async () => {
    const { pipeline, log, end } = harness();
    await pipeline.push(update("a"));
    await pipeline.push(update("a"));
    await pipeline.push(update("b"));
    expect(log).toEqual(["start a", "start b"]);
    await end("a");
    expect(log).toEqual(["start a", "start b", "end a", "start a"]);
    await end("a");
    await end("b");
    await pipeline.idle();
  });

  it("holds any other request until every earlier update is done, and later ones until it is", async () => {
    const { pipeline, log, end } = harness();
    await pipeline.push(update("a"));
    const readyTaken = pipeline.push(ready());
    await new Promise((r) => setImmediate(r));
    expect(log).toEqual(["start a"]);
    await end("a");
    expect(log).toEqual(["start a", "end a", "start ready"]);
    await end("ready");
    await readyTaken;
    await pipeline.push(update("b"));
    expect(log.at(-1)).toBe("start b");
    await end("b");
  });

  it(`stops taking requests while ${MAX_UPDATES_IN_FLIGHT} updates are in flight, until one finishes`, async () => {
    const { pipeline, end } = harness();
    for (let i = 1; i < MAX_UPDATES_IN_FLIGHT; i++) await pipeline.push(update(`a${i}`));
    let taken = false;
    const last = pipeline.push(update("last")).then(() => (taken = true));
    await new Promise((r) => setImmediate(r));
    expect(taken).toBe(false);
    await end("a7");
    await last;
    expect(taken).toBe(true);
  });

  it("reports the first failure of an update once, and runs nothing more", async () => {
    const { pipeline, log, end, failures } = harness();
    await pipeline.push(update("a"));
    await pipeline.push(update("b"));
    await end("a", new Error("the database went away"));
    await end("b", new Error("again"));
    expect(failures).toEqual([new Error("the database went away")]);
    expect(pipeline.failure).toEqual({ error: new Error("the database went away") });
    await pipeline.push(ready());
    await pipeline.push(update("c"));
    expect(log).not.toContain("start ready");
    expect(log).not.toContain("start c");
  });
});
