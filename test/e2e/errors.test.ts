import type { MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRunnerlineClients, type RunnerlineClients } from "../../src/client/clients.js";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { type RolloutConfigSchema, RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { WorkerStatus } from "../../src/gen/runnerline/v1/worker_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";

let server: RunningServer;
let grpc: RunnerlineClients;
let http: RunnerlineClients;

beforeAll(async () => {
  server = await startServer({ grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", store: "memory", log: () => {} });
  grpc = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${server.grpcPort}` });
  http = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${server.httpPort}`, transport: "connect" });
});

afterAll(async () => {
  await server.close();
});

const config = (fields: MessageInitShape<typeof RolloutConfigSchema>) => fields;
/** An enum number this server does not define, as a binary client from a newer proto could send. */
const unknownEnum = <E>(n: number) => n as E;
const deep = (levels: number): Record<string, unknown> => (levels === 0 ? { x: 1 } : { nested: deep(levels - 1) });

type Call = (c: RunnerlineClients) => Promise<unknown>;

/** Every RPC with the inputs it must refuse, and the code it must refuse them with. */
const cases: [string, Call, Code][] = [
  ["EnqueueRollout: malformed rollout_id", (c) => c.rollouts.enqueueRollout({ rolloutId: "bad id!" }), Code.InvalidArgument],
  ["EnqueueRollout: unknown mode", (c) => c.rollouts.enqueueRollout({ mode: unknownEnum(99) }), Code.InvalidArgument],
  ["EnqueueRollout: negative max_attempts", (c) => c.rollouts.enqueueRollout({ config: config({ maxAttempts: -1 }) }), Code.InvalidArgument],
  ["EnqueueRollout: retry_on SUCCEEDED", (c) => c.rollouts.enqueueRollout({ config: config({ retryOn: [AttemptStatus.SUCCEEDED] }) }), Code.InvalidArgument],
  ["EnqueueRollout: negative timeout", (c) => c.rollouts.enqueueRollout({ config: config({ timeout: durationFromMs(-5) }) }), Code.InvalidArgument],
  ["EnqueueRollout: reused rollout_id, other content", async (c) => {
    await c.rollouts.enqueueRollout({ rolloutId: "reused-id", resourcesId: "a" });
    return c.rollouts.enqueueRollout({ rolloutId: "reused-id", resourcesId: "b" });
  }, Code.AlreadyExists],
  ["EnqueueRollouts: empty batch", (c) => c.rollouts.enqueueRollouts({ requests: [] }), Code.InvalidArgument],
  ["EnqueueRollouts: one bad entry", (c) => c.rollouts.enqueueRollouts({ requests: [{}, { mode: unknownEnum(42) }] }), Code.InvalidArgument],
  ["GetRollout: missing rollout_id", (c) => c.rollouts.getRollout({}), Code.InvalidArgument],
  ["GetRollout: unknown rollout", (c) => c.rollouts.getRollout({ rolloutId: "ro-unknown" }), Code.NotFound],
  ["ListRollouts: negative page_size", (c) => c.rollouts.listRollouts({ pageSize: -1 }), Code.InvalidArgument],
  ["ListRollouts: unknown order_by field", (c) => c.rollouts.listRollouts({ orderBy: "colour" }), Code.InvalidArgument],
  ["ListRollouts: bad order_by direction", (c) => c.rollouts.listRollouts({ orderBy: "create_time sideways" }), Code.InvalidArgument],
  ["ListRollouts: garbage page_token", (c) => c.rollouts.listRollouts({ pageToken: "not-a-token" }), Code.InvalidArgument],
  ["ListRollouts: page_token of another query", async (c) => {
    await c.rollouts.enqueueRollouts({ requests: [{}, {}, {}] });
    const page = await c.rollouts.listRollouts({ pageSize: 1 });
    return c.rollouts.listRollouts({ pageSize: 1, pageToken: page.nextPageToken, orderBy: "create_time desc" });
  }, Code.InvalidArgument],
  ["ListRollouts: UNSPECIFIED status", (c) => c.rollouts.listRollouts({ statuses: [RolloutStatus.UNSPECIFIED] }), Code.InvalidArgument],
  ["ListRollouts: unknown status", (c) => c.rollouts.listRollouts({ statuses: [unknownEnum(77)] }), Code.InvalidArgument],
  ["CancelRollout: missing rollout_id", (c) => c.rollouts.cancelRollout({}), Code.InvalidArgument],
  ["CancelRollout: unknown rollout", (c) => c.rollouts.cancelRollout({ rolloutId: "ro-unknown" }), Code.NotFound],
  ["CancelRollout: already finished", async (c) => {
    const { rollout } = await c.rollouts.enqueueRollout({});
    await c.rollouts.cancelRollout({ rolloutId: rollout!.rolloutId });
    return c.rollouts.cancelRollout({ rolloutId: rollout!.rolloutId });
  }, Code.FailedPrecondition],
  ["DequeueRollout: missing worker_id", (c) => c.rollouts.dequeueRollout({}), Code.InvalidArgument],
  ["DequeueRollout: malformed worker_id", (c) => c.rollouts.dequeueRollout({ workerId: "a b" }), Code.InvalidArgument],
  ["WaitRollouts: no ids", (c) => c.rollouts.waitRollouts({}), Code.InvalidArgument],
  ["WaitRollouts: unknown id", (c) => c.rollouts.waitRollouts({ rolloutIds: ["ro-unknown"] }), Code.NotFound],
  ["WaitRollouts: negative timeout", async (c) => {
    const { rollout } = await c.rollouts.enqueueRollout({});
    return c.rollouts.waitRollouts({ rolloutIds: [rollout!.rolloutId], timeout: durationFromMs(-1) });
  }, Code.InvalidArgument],
  ["GetAttempt: missing attempt_id", (c) => c.attempts.getAttempt({}), Code.InvalidArgument],
  ["GetAttempt: unknown attempt", (c) => c.attempts.getAttempt({ attemptId: "at-unknown" }), Code.NotFound],
  ["ListAttempts: unknown order_by field", (c) => c.attempts.listAttempts({ orderBy: "attempt_id asc, colour" }), Code.InvalidArgument],
  ["ListAttempts: negative page_size", (c) => c.attempts.listAttempts({ pageSize: -5 }), Code.InvalidArgument],
  ["UpdateAttempt: missing attempt_id", (c) => c.attempts.updateAttempt({ status: AttemptStatus.RUNNING }), Code.InvalidArgument],
  ["UpdateAttempt: unknown attempt", (c) => c.attempts.updateAttempt({ attemptId: "at-unknown" }), Code.NotFound],
  ["UpdateAttempt: server-owned status", (c) => c.attempts.updateAttempt({ attemptId: "at-x", status: AttemptStatus.TIMEOUT }), Code.InvalidArgument],
  ["UpdateAttempt: stale expected_version", async (c) => {
    const attempt = await dequeueOne(c, "version-worker");
    return c.attempts.updateAttempt({ attemptId: attempt.attemptId, status: AttemptStatus.RUNNING, expectedVersion: 99n });
  }, Code.Aborted],
  ["UpdateAttempt: late report after the rollout was cancelled", async (c) => {
    const attempt = await dequeueOne(c, "late-worker");
    await c.rollouts.cancelRollout({ rolloutId: attempt.rolloutId });
    return c.attempts.updateAttempt({ attemptId: attempt.attemptId, status: AttemptStatus.SUCCEEDED });
  }, Code.FailedPrecondition],
  ["GetWorker: missing worker_id", (c) => c.workers.getWorker({}), Code.InvalidArgument],
  ["GetWorker: unknown worker", (c) => c.workers.getWorker({ workerId: "nobody" }), Code.NotFound],
  ["ListWorkers: unknown order_by field", (c) => c.workers.listWorkers({ orderBy: "height" }), Code.InvalidArgument],
  ["ListWorkers: unknown status", (c) => c.workers.listWorkers({ statuses: [WorkerStatus.UNSPECIFIED] }), Code.InvalidArgument],
  ["SendHeartbeat: missing worker_id", (c) => c.workers.sendHeartbeat({}), Code.InvalidArgument],
  ["SendHeartbeat: extra_stats over 64 KiB", (c) => c.workers.sendHeartbeat({ workerId: "big", extraStats: { blob: "x".repeat(70_000) } }), Code.ResourceExhausted],
  ["SendHeartbeat: extra_stats nested too deep", (c) => c.workers.sendHeartbeat({ workerId: "deep", extraStats: deep(12) as never }), Code.InvalidArgument],
  ["WatchWorkers: unknown status", async (c) => {
    for await (const _ of c.workers.watchWorkers({ statuses: [unknownEnum(12)] })) break;
  }, Code.InvalidArgument],
];

async function dequeueOne(c: RunnerlineClients, workerId: string) {
  await c.rollouts.enqueueRollout({});
  for (;;) {
    const { attempt } = await c.rollouts.dequeueRollout({ workerId });
    if (attempt === undefined) throw new Error("queue unexpectedly empty");
    if (attempt.workerId === workerId) return attempt;
  }
}

describe.each([
  ["gRPC port (grpc-js)", () => grpc],
  ["HTTP port (Connect protocol)", () => http],
])("bad input on the %s", (_, clients) => {
  it.each(cases)("%s → code %i", async (__, call, code) => {
    const error = await call(clients()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error, "the call succeeded").toBeInstanceOf(ConnectError);
    expect(Code[(error as ConnectError).code]).toBe(Code[code]);
    expect((error as ConnectError).rawMessage.length).toBeGreaterThan(0);
  });
});

it("bounds do not reject what is within them", async () => {
  const { worker } = await grpc.workers.sendHeartbeat({ workerId: "fits", extraStats: { blob: "x".repeat(60_000) } });
  expect(worker?.workerId).toBe("fits");
  const { worker: nested } = await grpc.workers.sendHeartbeat({ workerId: "nested", extraStats: deep(6) as never });
  expect(nested?.workerId).toBe("nested");
});
