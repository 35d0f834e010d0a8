import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRunnerlineClients, type RunnerlineClients } from "../../src/client/clients.js";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { WorkerStatus } from "../../src/gen/runnerline/v1/worker_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { tempDatabasePath } from "../harness.js";
import { eventually } from "../polling.js";
import { type ScriptedRunner, startScriptedRunner } from "./scripted-runner.js";

/**
 * The same fleet on both stores, queried with filters: what SQL runs on the
 * SQLite store (ids, statuses, times, labels) and what it leaves to the
 * process (failure_reason, error.message, snapshot fields) must agree with the
 * memory store, page by page.
 */
const stores: [string, () => string][] = [
  ["memory", () => "memory"],
  ["sqlite", () => `sqlite:${tempDatabasePath()}`],
];

describe.each(stores)("filters end to end on the %s store", (_, storeSpec) => {
  let server: RunningServer;
  let clients: RunnerlineClients;
  const runners: ScriptedRunner[] = [];
  /** f-0 … f-8: every third fails. */
  const ids = Array.from({ length: 9 }, (_, i) => `f-${i}`);
  const failing = ids.filter((_, i) => i % 3 === 0);

  beforeAll(async () => {
    server = await startServer({ grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", store: storeSpec(), log: () => {} });
    const address = `127.0.0.1:${server.grpcPort}`;
    clients = createRunnerlineClients({ baseUrl: `http://${address}` });
    runners.push(await startScriptedRunner(address, "gpu-a", { labels: { gpu: "h100", zone: "a" }, hostname: "host-a" }));
    runners.push(await startScriptedRunner(address, "cpu-b", { labels: { zone: "b" }, hostname: "host-b" }));
    for (const [i, id] of ids.entries()) {
      const outcome = i % 3 === 0 ? "fail" : "succeed";
      await clients.rollouts.enqueueRollout({ rolloutId: id, input: fromJson(ValueSchema, { outcome }) });
    }
    await clients.rollouts.waitRollouts({ rolloutIds: ids });
    // Sessions are settled: no more status changes while the filters run.
    await eventually(() => clients.workers.listWorkers({}), (r) => r.workers.every((w) => w.status === WorkerStatus.IDLE && w.snapshot !== undefined));
  });

  afterAll(async () => {
    for (const runner of runners) runner.drop();
    await server.close();
  });

  const rolloutIds = async (filter: string, extra: { statuses?: RolloutStatus[] } = {}) =>
    (await clients.rollouts.listRollouts({ filter, pageSize: 100, orderBy: "rollout_id", ...extra })).rollouts.map((r) => r.rolloutId);
  const workerIds = async (filter: string) => (await clients.workers.listWorkers({ filter })).workers.map((w) => w.workerId);

  it("lists rollouts by status, text, time and count (in SQL) and by failure_reason (in process)", async () => {
    expect(await rolloutIds("status = FAILED")).toEqual(failing);
    expect(await rolloutIds("status = SUCCEEDED AND NOT rollout_id : f-1")).toEqual(ids.filter((id, i) => i % 3 !== 0 && !id.includes("f-1")));
    expect(await rolloutIds("end_time > now - 1h AND attempt_count = 1")).toEqual(ids);
    expect(await rolloutIds("end_time < now - 1h OR start_time:*")).toEqual(ids);
    expect(await rolloutIds('failure_reason : "boom"')).toEqual(failing);
    expect(await rolloutIds('failure_reason : "boom" AND rollout_id = f-3')).toEqual(["f-3"]);
    // The existing fields still apply, ANDed with the filter.
    expect(await rolloutIds("rollout_id : f", { statuses: [RolloutStatus.FAILED] })).toEqual(failing);
  });

  it("lists attempts by worker, status and error", async () => {
    const all = (await clients.attempts.listAttempts({ pageSize: 100 })).attempts;
    expect(all).toHaveLength(ids.length);
    const onGpu = (await clients.attempts.listAttempts({ workerId: "gpu-a", pageSize: 100, orderBy: "attempt_id" })).attempts.map((a) => a.attemptId);
    const filtered = (await clients.attempts.listAttempts({ filter: "worker_id = gpu-a", pageSize: 100, orderBy: "attempt_id" })).attempts;
    expect(filtered.map((a) => a.attemptId)).toEqual(onGpu);
    const failed = await clients.attempts.listAttempts({ filter: 'status = FAILED AND error.message : "boom"', pageSize: 100 });
    expect(failed.attempts.map((a) => a.rolloutId).sort()).toEqual(failing);
    expect(failed.attempts.every((a) => a.status === AttemptStatus.FAILED)).toBe(true);
    const kind = await clients.attempts.listAttempts({ filter: "error.kind = REPORTED", pageSize: 100 });
    expect(kind.totalSize).toBe(failing.length);
  });

  it("lists workers by labels (in SQL) and by snapshot fields (in process)", async () => {
    expect(await workerIds("labels.gpu = h100")).toEqual(["gpu-a"]);
    expect(await workerIds("connected = true AND NOT labels:gpu")).toEqual(["cpu-b"]);
    expect(await workerIds("labels.zone = a OR labels.zone = b")).toEqual(["cpu-b", "gpu-a"]);
    expect(await workerIds("last_heartbeat_time > now - 1m AND status = IDLE")).toEqual(["cpu-b", "gpu-a"]);
    expect(await workerIds('snapshot.hostname = "host-b"')).toEqual(["cpu-b"]);
    expect(await workerIds("snapshot.cpu.usage_percent >= 50 AND labels.gpu = h100")).toEqual(["gpu-a"]);
  });

  it("pages through a filtered list, in SQL and in process alike", async () => {
    for (const filter of ["status = SUCCEEDED", 'status = SUCCEEDED AND NOT failure_reason : "x"']) {
      const seen: string[] = [];
      let pageToken = "";
      do {
        const page = await clients.rollouts.listRollouts({ filter, pageSize: 2, pageToken, orderBy: "rollout_id desc" });
        expect(page.totalSize).toBe(ids.length - failing.length);
        seen.push(...page.rollouts.map((r) => r.rolloutId));
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      expect(seen).toEqual(ids.filter((_, i) => i % 3 !== 0).reverse());
    }
  });

  it("answers a bad filter with INVALID_ARGUMENT naming the position", async () => {
    const cases: [() => Promise<unknown>, RegExp][] = [
      [() => clients.workers.listWorkers({ filter: "labels.gpu = h100 AND bogus > 1" }), /unknown field "bogus".*position 23/],
      [() => clients.rollouts.listRollouts({ filter: "status = DONE" }), /"DONE" is not a value of status.*position 10/],
      [() => clients.attempts.listAttempts({ filter: "end_time < yesterday" }), /RFC 3339.*position 12/],
      [() => clients.rollouts.listRollouts({ filter: "(status = FAILED" }), /expected "\)".*position 17/],
    ];
    for (const [call, message] of cases) {
      const error = await call().then(() => undefined, (e: unknown) => ConnectError.from(e));
      expect(error?.code).toBe(Code.InvalidArgument);
      expect(error?.rawMessage).toMatch(message);
    }
  });

  it("watches only the workers the filter matches", async () => {
    const abort = new AbortController();
    const seen: string[] = [];
    try {
      for await (const message of clients.workers.watchWorkers({ filter: "labels.gpu = h100" }, { signal: abort.signal })) {
        seen.push(message.worker!.workerId);
        if (message.initial) break;
      }
    } finally {
      abort.abort();
    }
    expect(seen).toEqual(["gpu-a"]);
    const error = await (async () => {
      for await (const _ of clients.workers.watchWorkers({ filter: "labels = x" })) break;
    })().then(() => undefined, (e: unknown) => ConnectError.from(e));
    expect(error?.code).toBe(Code.InvalidArgument);
  });
});
