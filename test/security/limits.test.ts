import { create, fromJson, type JsonObject } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, describe, expect, it } from "vitest";
import { createRunnerlineClients } from "../../src/client/clients.js";
import { RolloutStatus, RolloutView } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { RunnerService, type SessionRequest, SessionRequestSchema, type SessionResponse } from "../../src/gen/runnerline/v1/runner_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import type { ServerOptions } from "../../src/server/config.js";

const servers: RunningServer[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

async function serverWith(options: ServerOptions) {
  const server = await startServer({ grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", store: "memory", log: () => {}, ...options });
  servers.push(server);
  return {
    server,
    grpc: createRunnerlineClients({ baseUrl: `http://127.0.0.1:${server.grpcPort}` }),
    http: createRunnerlineClients({ baseUrl: `http://127.0.0.1:${server.httpPort}`, transport: "connect" }),
    connection: () => createGrpcTransport({ baseUrl: `http://127.0.0.1:${server.grpcPort}` }),
  };
}

const codeOf = (promise: Promise<unknown>) =>
  promise.then(
    () => "ok" as const,
    (e) => ConnectError.from(e),
  );

async function expectRefused(promise: Promise<unknown>, code: Code, message: RegExp) {
  const error = await codeOf(promise);
  expect(error).toBeInstanceOf(ConnectError);
  expect((error as ConnectError).code, (error as ConnectError).message).toBe(code);
  expect((error as ConnectError).rawMessage).toMatch(message);
}

const value = (json: unknown) => fromJson(ValueSchema, json as never);

describe("input bounds", async () => {
  const { grpc, http, connection } = await serverWith({ limits: { maxInputBytes: 1024 } });

  it.each([
    ["gRPC", () => grpc],
    ["Connect", () => http],
  ])("rollout input over its bound is INVALID_ARGUMENT naming the field (%s)", async (_name, clients) => {
    await expectRefused(clients().rollouts.enqueueRollout({ input: value("x".repeat(2000)) }), Code.InvalidArgument, /^input is \d+ bytes.*at most 1024/);
    await expectRefused(
      clients().rollouts.enqueueRollouts({ requests: [{}, { input: value({ big: "x".repeat(2000) }) }] }),
      Code.InvalidArgument,
      /^requests\[1\]\.input/,
    );
    expect((await clients().rollouts.listRollouts({})).totalSize).toBe(0);
  });

  it("rollout metadata over 64 KiB is INVALID_ARGUMENT", async () => {
    await expectRefused(grpc.rollouts.enqueueRollout({ metadata: { blob: "x".repeat(70_000) } }), Code.InvalidArgument, /^metadata is/);
  });

  it("extra_stats over 64 KiB is RESOURCE_EXHAUSTED, deeper than 8 levels INVALID_ARGUMENT", async () => {
    await expectRefused(grpc.workers.sendHeartbeat({ workerId: "w-stats", extraStats: { blob: "x".repeat(70_000) } }), Code.ResourceExhausted, /extra_stats is/);
    const deep = (n: number): JsonObject => (n === 0 ? { x: 1 } : { n: deep(n - 1) });
    await expectRefused(grpc.workers.sendHeartbeat({ workerId: "w-stats", extraStats: deep(9) }), Code.InvalidArgument, /deeper than 8/);
  });

  it("ids longer than 128 characters or outside the safe alphabet are INVALID_ARGUMENT", async () => {
    await expectRefused(grpc.rollouts.enqueueRollout({ rolloutId: "r".repeat(129) }), Code.InvalidArgument, /rollout_id is 129 characters long; ids have at most 128/);
    await expectRefused(grpc.workers.sendHeartbeat({ workerId: "w/../x" }), Code.InvalidArgument, /worker_id must be 1-128/);
  });

  it("a refusal that echoes non-BMP text is answered over gRPC (it used to leave the call without an answer)", async () => {
    // grpc-js encodes the status message with encodeURI, which throws on a lone surrogate.
    await expectRefused(grpc.rollouts.listRollouts({ filter: "status = 😀" }), Code.InvalidArgument, /unexpected character "😀"/);
    await expectRefused(grpc.workers.listWorkers({ filter: "😀😀" }), Code.InvalidArgument, /unexpected character "😀"/);
  });

  it("labels: more than 64 pairs, or an oversize key or value, are INVALID_ARGUMENT", async () => {
    const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, "v"]));
    await expectRefused(grpc.workers.listWorkers({ labels: many }), Code.InvalidArgument, /labels has 65 pairs; at most 64/);
    await expectRefused(grpc.workers.listWorkers({ labels: { ["k".repeat(129)]: "v" } }), Code.InvalidArgument, /keys must be 1-128 bytes/);
    const session = openSession(connection(), { workerId: "w-labels", labels: { k: "v".repeat(1025) } });
    await expectRefused(session.next(), Code.InvalidArgument, /hello\.labels\["k"\] is 1025 bytes/);
  });

  it("an oversize order_by is refused with a short message, and the connection keeps working", async () => {
    // Found by the fuzz suite: the whole order_by was echoed into the status
    // message, past the client's metadata limit, and the call failed as INTERNAL.
    const error = await codeOf(grpc.rollouts.listRollouts({ orderBy: "x".repeat(100_000) }));
    expect(error).toMatchObject({ code: Code.InvalidArgument });
    expect((error as ConnectError).rawMessage.length).toBeLessThan(300);
    const bad = await codeOf(grpc.rollouts.listRollouts({ orderBy: `${"y".repeat(500)} desc` }));
    expect((bad as ConnectError).rawMessage.length).toBeLessThan(300);
    expect((await grpc.rollouts.listRollouts({})).rollouts).toBeDefined();
  });

  it("WaitRollouts with a timeout beyond Node's timer range waits instead of returning at once", async () => {
    // Found by the fuzz suite (TimeoutOverflowWarning): setTimeout turns a
    // delay over 2^31-1 ms into 1 ms, so a 100-day wait returned immediately.
    const { rollout } = await grpc.rollouts.enqueueRollout({});
    const started = Date.now();
    const answer = await codeOf(grpc.rollouts.waitRollouts({ rolloutIds: [rollout!.rolloutId], timeout: { seconds: 100n * 86_400n } }, { timeoutMs: 1_000 }));
    expect(answer).toMatchObject({ code: Code.DeadlineExceeded });
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
  });

  it("page_size above 1000 returns at most 1000", async () => {
    const big = await serverWith({});
    await big.grpc.rollouts.enqueueRollouts({ requests: Array.from({ length: 1001 }, () => ({})) });
    const page = await big.grpc.rollouts.listRollouts({ pageSize: 5000 });
    expect(page.rollouts).toHaveLength(1000);
    expect(page.nextPageToken).not.toBe("");
  });
});

describe("capacity bounds", () => {
  it("the queue bound refuses a batch whole with RESOURCE_EXHAUSTED", async () => {
    const { grpc } = await serverWith({ limits: { maxQueuedRollouts: 5 } });
    await grpc.rollouts.enqueueRollouts({ requests: [{}, {}, {}] });
    await expectRefused(grpc.rollouts.enqueueRollouts({ requests: [{}, {}, {}] }), Code.ResourceExhausted, /adding 3 would pass its bound of 5 \(nothing was enqueued\)/);
    expect((await grpc.rollouts.listRollouts({})).totalSize).toBe(3);
    await grpc.rollouts.enqueueRollouts({ requests: [{}, {}] });
    await expectRefused(grpc.rollouts.enqueueRollout({}), Code.ResourceExhausted, /bound of 5/);
  });

  it("sessions per connection and in total are bounded", async () => {
    const { connection } = await serverWith({ limits: { maxSessions: 3, maxSessionsPerConnection: 2 } });
    const oneConnection = connection();
    const a = openSession(oneConnection, { workerId: "w-a" });
    const b = openSession(oneConnection, { workerId: "w-b" });
    expect((await a.next()).message.case).toBe("welcome");
    expect((await b.next()).message.case).toBe("welcome");
    await expectRefused(openSession(oneConnection, { workerId: "w-c" }).next(), Code.ResourceExhausted, /this connection has 2 open sessions/);
    const other = connection();
    const c = openSession(other, { workerId: "w-c" });
    expect((await c.next()).message.case).toBe("welcome");
    await expectRefused(openSession(connection(), { workerId: "w-d" }).next(), Code.ResourceExhausted, /3 open sessions, its bound/);
    a.close();
    await expect.poll(async () => {
      const d = openSession(other, { workerId: "w-d" });
      const first = await d.next().then((m) => m.message.case, (e) => ConnectError.from(e).code);
      d.close();
      return first;
    }).toBe("welcome");
    b.close();
    c.close();
  });

  it("a heartbeat flood is coalesced, then refused, without starving other workers", async () => {
    const { grpc, connection } = await serverWith({ heartbeatIntervalMs: 60_000, limits: { heartbeatsPerSecond: 1 } });
    const results = await Promise.all(Array.from({ length: 60 }, () => codeOf(grpc.workers.sendHeartbeat({ workerId: "w-flood" }))));
    const refused = results.filter((r) => r !== "ok");
    expect(results.slice(0, 2)).toEqual(["ok", "ok"]);
    expect(refused.length).toBeGreaterThan(0);
    for (const error of refused) expect(error).toMatchObject({ code: Code.ResourceExhausted });
    expect(await codeOf(grpc.workers.sendHeartbeat({ workerId: "w-calm" }))).toBe("ok");

    const session = openSession(connection(), { workerId: "w-flood-session" });
    expect((await session.next()).message.case).toBe("welcome");
    for (let i = 1; i <= 40; i++) session.send({ message: { case: "heartbeat", value: { sequence: BigInt(i) } } });
    const answers: SessionResponse["message"][] = [];
    while (answers.length < 40) answers.push((await session.next()).message);
    expect(answers.filter((m) => m.case === "heartbeatAck").length).toBeGreaterThanOrEqual(12);
    const rejected = answers.filter((m) => m.case === "rejected");
    expect(rejected.length).toBeGreaterThan(0);
    expect(rejected[0]!.value).toMatchObject({ code: Code.ResourceExhausted, requestKind: "heartbeat" });
    session.close();
  });

  it("message size is bounded per port", async () => {
    const { grpc, http } = await serverWith({ maxMessageBytes: 64 * 1024, httpMaxMessageBytes: 32 * 1024 });
    await expectRefused(grpc.rollouts.enqueueRollout({ resourcesId: "x".repeat(100_000) }), Code.ResourceExhausted, /.*/);
    await expectRefused(http.rollouts.enqueueRollout({ resourcesId: "x".repeat(40_000) }), Code.ResourceExhausted, /.*/);
    // Under the gRPC port's bound but over the HTTP port's: only HTTP refuses.
    expect(await codeOf(grpc.rollouts.enqueueRollout({ resourcesId: "x".repeat(40_000) }))).not.toMatchObject({ code: Code.ResourceExhausted });
  });
});

describe("strict Connect JSON", async () => {
  const { server } = await serverWith({});
  const post = async (method: string, body: string) => {
    const response = await fetch(`http://127.0.0.1:${server.httpPort}/runnerline.v1.RolloutService/${method}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
    return { status: response.status, body: (await response.json()) as { code?: string; message?: string } };
  };

  it.each([
    ["an unknown enum name", "ListRollouts", '{"statuses":["ROLLOUT_STATUS_FAILD"]}', /^statuses\[0\]: unknown RolloutStatus value "ROLLOUT_STATUS_FAILD"/],
    ["an unknown enum name in a nested message", "EnqueueRollout", '{"config":{"retryOn":["ATTEMPT_STATUS_NOPE"]}}', /^config\.retry_on\[0\]: unknown AttemptStatus/],
    ["an explicit null", "EnqueueRollout", '{"config":null}', /^config is null/],
    ["an explicit null in a list", "WaitRollouts", '{"rolloutIds":[null]}', /rollout_ids.*null/],
    ["an unknown field", "ListRollouts", '{"status":["ROLLOUT_STATUS_FAILED"]}', /"status" is unknown/],
    ["an unknown mode", "EnqueueRollout", '{"mode":"ROLLOUT_MODE_PROD"}', /^mode: unknown RolloutMode value "ROLLOUT_MODE_PROD"/],
  ])("refuses %s with invalid_argument naming it", async (_name, method, body, message) => {
    const answer = await post(method, body);
    expect(answer.status).toBe(400);
    expect(answer.body.code).toBe("invalid_argument");
    expect(answer.body.message).toMatch(message);
  });

  it("accepts null where it is a value (google.protobuf.Value input)", async () => {
    const answer = await post("EnqueueRollout", '{"input":null,"metadata":{"k":null}}');
    expect(answer.status).toBe(200);
  });
});

describe("bounded output", async () => {
  const tenMB = 10 * 1000 * 1000;
  const { grpc, http } = await serverWith({ limits: { maxInputBytes: 11 * 1000 * 1000 } });
  const ids: string[] = [];
  for (let i = 0; i < 2; i++) ids.push((await grpc.rollouts.enqueueRollout({ input: value("x".repeat(tenMB)) })).rollout!.rolloutId);
  await grpc.rollouts.enqueueRollout({ rolloutId: "small", input: value("y") });
  for (const rolloutId of [...ids, "small"]) await grpc.rollouts.cancelRollout({ rolloutId });

  it.each([
    ["gRPC", () => grpc],
    ["Connect", () => http],
  ])("list pages are cut by size and the token continues (%s)", { timeout: 60_000 }, async (_name, clients) => {
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await clients().rollouts.listRollouts({ pageToken, orderBy: "create_time" });
      expect(page.totalSize).toBe(3);
      seen.push(...page.rollouts.map((r) => r.rolloutId));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(seen).toEqual([...ids, "small"]);
  });

  it("the basic view leaves input out, so everything fits one page", async () => {
    const page = await grpc.rollouts.listRollouts({ view: RolloutView.BASIC });
    expect(page.rollouts).toHaveLength(3);
    expect(page.rollouts.every((r) => r.input === undefined && r.status === RolloutStatus.CANCELLED)).toBe(true);
    expect(page.nextPageToken).toBe("");
  });

  it("WaitRollouts returns what fits and names the rest", { timeout: 60_000 }, async () => {
    const answer = await grpc.rollouts.waitRollouts({ rolloutIds: [...ids, "small"], timeout: { seconds: 0n } });
    expect(answer.rollouts.map((r) => r.rolloutId)).toEqual([ids[0]]);
    expect(answer.remainingRolloutIds).toEqual([ids[1], "small"]);
    const rest = await grpc.rollouts.waitRollouts({ rolloutIds: answer.remainingRolloutIds, timeout: { seconds: 0n } });
    expect(rest.rollouts.map((r) => r.rolloutId)).toEqual([ids[1]]);
    expect(rest.remainingRolloutIds).toEqual(["small"]);
    const basic = await grpc.rollouts.waitRollouts({ rolloutIds: [...ids, "small"], timeout: { seconds: 0n }, view: RolloutView.BASIC });
    expect(basic.rollouts).toHaveLength(3);
    expect(basic.remainingRolloutIds).toEqual([]);
  });
});

/** A runner session over `transport` (one transport is one HTTP/2 connection). */
function openSession(transport: Transport, hello: { workerId: string; labels?: Record<string, string> }) {
  const runner = createClient(RunnerService, transport);
  const queue: SessionRequest[] = [create(SessionRequestSchema, { message: { case: "hello", value: hello } })];
  let wake: (() => void) | undefined;
  let closed = false;
  const abort = new AbortController();
  const requests = (async function* () {
    for (;;) {
      if (queue.length > 0) yield queue.shift()!;
      else if (closed) return;
      else await new Promise<void>((resolve) => (wake = resolve));
    }
  })();
  const responses = runner.session(requests, { signal: abort.signal })[Symbol.asyncIterator]();
  return {
    send(message: Parameters<typeof create<typeof SessionRequestSchema>>[1]) {
      queue.push(create(SessionRequestSchema, message));
      wake?.();
    },
    async next(): Promise<SessionResponse> {
      const result = await responses.next();
      if (result.done) throw new Error("the session ended");
      return result.value;
    },
    close() {
      closed = true;
      wake?.();
      abort.abort();
    },
  };
}

