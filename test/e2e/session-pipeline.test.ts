/**
 * One session's attempt updates about different attempts do not wait for
 * each other (src/server/services/request-pipeline.ts): on PostgreSQL a
 * runner's burst of reports shares the store's turns, where each used to
 * take a transaction of its own, one after the other. And a success that
 * returns its credit shares its turn with the claim of the next rollout
 * (src/server/dispatch/turn/requests.ts, reportAndRefill).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRunnerlineClients } from "../../src/client/clients.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { dropDatabase } from "../scaleout/fleet.js";
import { freshDatabase, POSTGRES_AVAILABLE, POSTGRES_URL } from "../postgres.js";
import { eventually } from "../polling.js";
import { type AssignmentView, connectDriver, type Driver } from "./drivers.js";

const COUNT = 40;

describe.skipIf(!POSTGRES_AVAILABLE)("a session's burst of reports on PostgreSQL", () => {
  let server: RunningServer;
  let driver: Driver;
  let database: string;

  beforeAll(async () => {
    database = await freshDatabase("pipeline");
    server = await startServer({ grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", store: database, log: () => {} });
    driver = connectDriver(`127.0.0.1:${server.grpcPort}`);
  });

  afterAll(async () => {
    driver?.close();
    await server?.close();
    if (database !== undefined) await dropDatabase(database, POSTGRES_URL).catch(() => undefined);
  });

  /** runnerline_store_commit_seconds_count: one per store transaction. */
  async function commits(): Promise<number> {
    const text = await (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`)).text();
    return Number(/^runnerline_store_commit_seconds_count (\d+)/m.exec(text)![1]);
  }

  it(`applies ${COUNT} reports sent back to back in far fewer than ${COUNT} transactions, all of them`, async () => {
    const clients = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${server.grpcPort}` });
    const ids: string[] = [];
    for (let i = 0; i < COUNT; i++) ids.push(await driver.enqueue({ i }));
    const session = driver.session();
    session.send({ kind: "hello", workerId: "burst", capacity: COUNT });
    await session.nextOf("welcome");
    session.send({ kind: "ready", slots: COUNT });
    const assigned: AssignmentView[] = [];
    while (assigned.length < COUNT) assigned.push(await session.nextOf("assignment"));
    // The claims are durable once their assignments are out; what follows is the reports' work alone.
    const before = await commits();
    for (const { attemptId } of assigned) session.send({ kind: "update", attemptId, status: "SUCCEEDED" });
    await eventually(
      () => Promise.all(ids.map((rolloutId) => driver.rolloutStatus(rolloutId))),
      (statuses) => statuses.every((s) => s.status === "SUCCEEDED"),
    );
    const used = (await commits()) - before;
    // One after the other they took COUNT transactions; sharing turns, a handful.
    expect(used).toBeLessThanOrEqual(COUNT / 4);
    const { rollouts } = await clients.rollouts.waitRollouts({ rolloutIds: ids });
    expect(rollouts.map((r) => r.status)).toEqual(ids.map(() => RolloutStatus.SUCCEEDED));
    const worker = await driver.worker("burst");
    expect(worker.currentAttemptIds).toEqual([]);
    session.close();
  });

  it("commits a success that returns its credit and the claim of the next rollout in one transaction", async () => {
    const first = await driver.enqueue({ n: 1 });
    const session = driver.session();
    session.send({ kind: "hello", workerId: "refill", capacity: 1, terminalUpdateReturnsCredit: true });
    await session.nextOf("welcome");
    session.send({ kind: "ready", slots: 1 });
    const held = await session.nextOf("assignment");
    expect(held.rolloutId).toBe(first);
    const second = await driver.enqueue({ n: 2 });
    const before = await commits();
    session.send({ kind: "update", attemptId: held.attemptId, status: "SUCCEEDED" });
    const next = await session.nextOf("assignment");
    expect(next.rolloutId).toBe(second);
    // The report, the credit it returned and the claim it made room for: one turn, where they took two in a row.
    expect((await commits()) - before).toBe(1);
    expect((await driver.rolloutStatus(first)).status).toBe("SUCCEEDED");
    expect((await driver.worker("refill")).currentAttemptIds).toEqual([next.attemptId]);
    session.close();
  });
});
