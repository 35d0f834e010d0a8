/**
 * The newer session of a worker id wins, over real sockets and with both
 * drivers: the older session hears SessionReplaced (the worker id, the newer
 * session and where it came from) and then ends with ABORTED; the server logs
 * the replacement with both peers and counts it in /metrics.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { connectDriver, type Driver, protoLoaderDriver } from "./drivers.js";

const drivers: [string, (address: string) => Driver][] = [
  ["Connect client", connectDriver],
  ["grpc-js client from .proto files", protoLoaderDriver],
];

async function replacedCount(server: RunningServer): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("runnerline_sessions_replaced_total "));
  if (line === undefined) throw new Error("runnerline_sessions_replaced_total is not in /metrics");
  return Number(line.split(" ")[1]);
}

describe.each(drivers)("a replaced session with the %s", (_, makeDriver) => {
  let server: RunningServer;
  let driver: Driver;
  const lines: string[] = [];

  beforeEach(async () => {
    lines.length = 0;
    server = await startServer({ grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", store: "memory", log: (line) => lines.push(line) });
    driver = makeDriver(`127.0.0.1:${server.grpcPort}`);
  });

  afterEach(async () => {
    driver.close();
    await server.close();
  });

  it("hears SessionReplaced naming the newer session, then ends with ABORTED; the server logs both peers and counts it", async () => {
    expect(await replacedCount(server)).toBe(0);
    const older = driver.session();
    older.send({ kind: "hello", workerId: "twin" });
    const first = await older.nextOf("welcome");

    const newer = driver.session();
    newer.send({ kind: "hello", workerId: "twin" });
    const second = await newer.nextOf("welcome");

    const replaced = await older.nextOf("session_replaced");
    expect(replaced).toMatchObject({ workerId: "twin", newSessionId: second.sessionId });
    expect(replaced.newPeer).toMatch(/^127\.0\.0\.1:\d+$/);
    await expect(older.next()).rejects.toThrow(/aborted.*replaced by a newer session/i);

    // The newer session goes on.
    newer.send({ kind: "heartbeat", attemptIds: [], sequence: 1 });
    expect(await newer.nextOf("heartbeat_ack")).toEqual({ kind: "heartbeat_ack", sequence: 1 });
    expect(await replacedCount(server)).toBe(1);

    const logged = lines.find((line) => line.startsWith("session replaced"));
    expect(logged).toBeDefined();
    expect(logged).toContain("workerId=twin");
    expect(logged).toContain(`sessionId=${first.sessionId}`);
    expect(logged).toContain(`newSessionId=${second.sessionId}`);
    expect(logged).toMatch(/ peer=127\.0\.0\.1:\d+/);
    expect(logged).toContain(`newPeer=${replaced.newPeer}`);
    newer.close();
    older.close();
  });
});
