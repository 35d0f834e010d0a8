/**
 * The mass-drop brake under churn: sessions that connect and drop at once
 * (a crash-looping runner, or someone doing it on purpose) must not engage
 * it, however many; losing most of an established fleet still does.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { eventually } from "../polling.js";
import { connectDriver, type Driver, type TestSession } from "./drivers.js";

// Long enough that a churning session (Hello, maybe one heartbeat, gone) never lasts one interval, even on a loaded machine.
const HEARTBEAT_MS = 1_000;
const ENGAGED = /mass-drop brake engaged/;

let server: RunningServer;
let driver: Driver;
const logs: string[] = [];

beforeAll(async () => {
  server = await startServer({
    grpcAddress: "127.0.0.1:0",
    httpAddress: "127.0.0.1:0",
    store: "memory",
    heartbeatIntervalMs: HEARTBEAT_MS,
    // The brake's window is one grace period: long enough that all the churn below falls in one.
    heartbeatGraceMs: 60_000,
    drainTimeoutMs: 500,
    log: (line) => logs.push(line),
  });
  driver = connectDriver(`127.0.0.1:${server.grpcPort}`);
});

afterAll(async () => {
  driver?.close();
  await server?.close();
});

async function establish(workerId: string): Promise<TestSession> {
  const session = driver.session();
  session.send({ kind: "hello", workerId });
  await session.nextOf("welcome");
  await new Promise((resolve) => setTimeout(resolve, HEARTBEAT_MS + 200));
  session.send({ kind: "heartbeat", attemptIds: [], sequence: 1 });
  await session.nextOf("heartbeat_ack");
  return session;
}

it("churning sessions never engage the brake; losing most of the established fleet does", async () => {
  const fleet = await Promise.all(Array.from({ length: 12 }, (_, i) => establish(`steady-${i}`)));

  // 300 sessions that say Hello and drop, 30 at a time, some after a heartbeat.
  for (let round = 0; round < 10; round++) {
    await Promise.all(
      Array.from({ length: 30 }, async (_, i) => {
        const session = driver.session();
        session.send({ kind: "hello", workerId: `churn-${round}-${i}` });
        await session.nextOf("welcome");
        if (i % 2 === 0) {
          session.send({ kind: "heartbeat", attemptIds: [], sequence: 1 });
          await session.nextOf("heartbeat_ack");
        }
        session.close();
      }),
    );
  }
  await eventually(
    async () => (await driver.worker("churn-9-29")).status,
    (status) => status === "UNKNOWN",
  );
  expect(logs.filter((line) => ENGAGED.test(line))).toEqual([]);

  // Control: 8 of the 12 established runners lose their streams.
  for (const session of fleet.slice(0, 8)) session.close();
  const engaged = await eventually(
    async () => logs.filter((line) => ENGAGED.test(line)),
    (lines) => lines.length > 0,
  );
  expect(engaged[0]).toMatch(/of 12 established runners/);
  for (const session of fleet.slice(8)) session.close();
}, 60_000);
