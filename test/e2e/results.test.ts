import { fromJson, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, expect, it } from "vitest";
import { RESULT_MAX_BYTES, RESULT_MAX_DEPTH } from "../../src/common/attempt-result.js";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { startTestServer, type TestServer } from "../client/helpers.js";

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server.close());

/** A rollout dequeued by a unary client, with the attempt to report on. */
async function dequeued(workerId: string) {
  await server.clients.rollouts.enqueueRollout({});
  const { attempt } = await server.clients.rollouts.dequeueRollout({ workerId });
  return attempt!;
}

const codeOf = (call: Promise<unknown>) => call.then(() => Code[0], (e: unknown) => Code[ConnectError.from(e).code]);

it("UpdateAttempt's result reaches the attempt, the rollout, GetRollout and WaitRollouts", async () => {
  const attempt = await dequeued("unary-1");
  await server.clients.attempts.updateAttempt({
    attemptId: attempt.attemptId,
    status: AttemptStatus.SUCCEEDED,
    result: fromJson(ValueSchema, { reward: 0.25, trace: ["a", "b"] }),
  });
  const { rollout } = await server.clients.rollouts.getRollout({ rolloutId: attempt.rolloutId });
  expect(rollout!.status).toBe(RolloutStatus.SUCCEEDED);
  expect(toJson(ValueSchema, rollout!.result!)).toEqual({ reward: 0.25, trace: ["a", "b"] });
  const { rollouts } = await server.clients.rollouts.waitRollouts({ rolloutIds: [attempt.rolloutId] });
  expect(toJson(ValueSchema, rollouts[0]!.result!)).toEqual({ reward: 0.25, trace: ["a", "b"] });
  const stored = await server.clients.attempts.getAttempt({ attemptId: attempt.attemptId });
  expect(toJson(ValueSchema, stored.attempt!.result!)).toEqual({ reward: 0.25, trace: ["a", "b"] });
});

it("a result over the size bound is RESOURCE_EXHAUSTED, too deep INVALID_ARGUMENT, and the attempt is unchanged", async () => {
  const attempt = await dequeued("unary-2");
  const tooLarge = fromJson(ValueSchema, "x".repeat(RESULT_MAX_BYTES));
  let deep: unknown = 1;
  for (let i = 0; i <= RESULT_MAX_DEPTH; i++) deep = [deep];
  const tooDeep = fromJson(ValueSchema, deep as number[]);
  const report = (result: typeof tooLarge) =>
    server.clients.attempts.updateAttempt({ attemptId: attempt.attemptId, status: AttemptStatus.SUCCEEDED, result });
  expect(await codeOf(report(tooLarge))).toBe("ResourceExhausted");
  expect(await codeOf(report(tooDeep))).toBe("InvalidArgument");
  const { attempt: after } = await server.clients.attempts.getAttempt({ attemptId: attempt.attemptId });
  expect(after!.status).toBe(AttemptStatus.PREPARING);
  expect(after!.result).toBeUndefined();
});
