import { afterAll, describe, expect, it } from "vitest";
import { createRunnerlineClients } from "../../src/client/clients.js";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { MemoryStore } from "../../src/server/store/memory-store.js";
import { coordinatorOn, OPENING, RecordingLink } from "../harness.js";
import { eventually, freePort } from "../polling.js";
import { type CliProcess, startCli, stopAll } from "./processes.js";

describe("drain end rule (coordinator)", () => {
  const setup = () => coordinatorOn(new MemoryStore());

  it("ends as soon as no session holds an attempt, though idle sessions stay open", async () => {
    const { coordinator } = setup();
    const [busy, idle] = [new RecordingLink("w-busy"), new RecordingLink("w-idle")];
    await coordinator.openSession(busy, OPENING, []);
    await coordinator.grantCredits(busy, 1);
    await coordinator.enqueue([{ $typeName: "runnerline.v1.EnqueueRolloutRequest" } as never]);
    await coordinator.openSession(idle, OPENING, []);
    const [assignment] = busy.ofCase("assignment");
    const attemptId = assignment!.attempt!.attemptId;

    let ended = false;
    const draining = coordinator.drain("server shutting down", 60_000).then((outcome) => {
      ended = true;
      return outcome;
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(ended).toBe(false);
    await coordinator.report(attemptId, { status: AttemptStatus.SUCCEEDED, errorMessage: "" }, { workerId: "w-busy" });
    // Long before the 60 s timeout: the report was the last thing it waited for.
    expect(await draining).toEqual({ held: [] });
    expect(coordinator.openSessions().map((s) => s.workerId).sort()).toEqual(["w-busy", "w-idle"]);
  });

  it("tells a runner that reconnects during the drain at once, and gives it nothing", async () => {
    const { coordinator } = setup();
    const holder = new RecordingLink("w-1");
    await coordinator.openSession(holder, OPENING, []);
    await coordinator.grantCredits(holder, 1);
    await coordinator.enqueue([{ $typeName: "runnerline.v1.EnqueueRolloutRequest" } as never]);
    const draining = coordinator.drain("server shutting down", 60_000);

    const late = new RecordingLink("w-2");
    await coordinator.openSession(late, OPENING, []);
    expect(late.sent.map((m) => m.message.case)).toEqual(["welcome", "drain"]);
    await coordinator.grantCredits(late, 5);
    await coordinator.enqueue([{ $typeName: "runnerline.v1.EnqueueRolloutRequest" } as never]);
    expect(late.ofCase("assignment")).toHaveLength(0);

    // The holder reconnects with its attempt: resumed, told to drain, and the drain waits for its report.
    const attemptId = holder.ofCase("assignment")[0]!.attempt!.attemptId;
    const again = new RecordingLink("w-1", "se-w-1-again");
    await coordinator.openSession(again, OPENING, [attemptId]);
    expect(again.sent.map((m) => m.message.case)).toEqual(["welcome", "drain"]);
    expect(again.ofCase("welcome")[0]!.resumedAttemptIds).toEqual([attemptId]);
    await coordinator.report(attemptId, { status: AttemptStatus.SUCCEEDED, errorMessage: "" }, { workerId: "w-1" });
    expect(await draining).toEqual({ held: [] });
  });

  it("on timeout, says which sessions still hold which attempts", async () => {
    const { coordinator } = setup();
    const link = new RecordingLink("w-1");
    await coordinator.openSession(link, OPENING, []);
    await coordinator.grantCredits(link, 1);
    await coordinator.enqueue([{ $typeName: "runnerline.v1.EnqueueRolloutRequest" } as never]);
    const attemptId = link.ofCase("assignment")[0]!.attempt!.attemptId;
    expect(await coordinator.drain("server shutting down", 20)).toEqual({
      held: [{ sessionId: "se-w-1", workerId: "w-1", attemptIds: [attemptId] }],
    });
  });
});

describe("drain of a real fleet", () => {
  const processes: CliProcess[] = [];
  afterAll(() => stopAll(processes));

  it("a 3 s rollout on a 3-runner fleet ends a 10 s drain when it finishes, not at the timeout", async () => {
    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    const server = startCli([
      "serve",
      "--grpc-addr", `127.0.0.1:${grpcPort}`,
      "--http-addr", `127.0.0.1:${httpPort}`,
      "--store", "memory",
      "--drain-timeout", "10",
    ]);
    processes.push(server);
    await server.waitFor("serving gRPC");
    const runners = ["d1", "d2", "d3"].map((id) => {
      const runner = startCli(["runner", "--worker-id", id, "--exec", "sleep 3; echo '{\"ok\": true}'", "--server", `127.0.0.1:${grpcPort}`]);
      processes.push(runner);
      return runner;
    });
    const clients = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${grpcPort}` });
    await eventually(() => clients.workers.listWorkers({}), (page) => page.workers.filter((w) => w.connected).length === 3, 20_000);
    const { rollout } = await clients.rollouts.enqueueRollout({});
    await eventually(
      () => clients.rollouts.getRollout({ rolloutId: rollout!.rolloutId }),
      (r) => r.rollout?.status === RolloutStatus.RUNNING,
      20_000,
    );

    const signalled = Date.now();
    server.child.kill("SIGTERM");
    expect(await server.exited).toBe(0);
    const drainMs = Date.now() - signalled;
    console.log(`drain with a 3 s rollout in hand on a 3-runner fleet: ${drainMs} ms (timeout 10 s)`);
    expect(server.output()).toMatch(/drain finished in \d+ ms/);
    expect(runners.map((r) => r.output()).join("\n")).toMatch(/attempt at-[0-9a-f]+ succeeded/);
    // The rollout had at most 3 s left; the idle runners' reconnects must not hold the drain to its 10 s timeout.
    expect(drainMs).toBeLessThan(8_000);
  }, 60_000);
});
