import { create, fromJson, type JsonValue, type MessageInitShape, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AttemptStatus } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RunnerService, type SessionRequest, SessionRequestSchema } from "../../src/gen/runnerline/v1/runner_pb.js";
import { Channel } from "./drivers.js";

/**
 * A runner session over the real RunnerService stream whose behaviour the
 * rollout's input decides: {"outcome": "succeed"} reports SUCCEEDED,
 * {"outcome": "fail"} FAILED with error "boom", {"outcome": "silent"} never
 * reports (for timeouts); a "result" next to "succeed" is reported as the
 * attempt's result. Protocol only: it shares no code with the SDK.
 */
export interface ScriptedRunner {
  /** Attempt ids assigned so far. */
  readonly assigned: string[];
  /** Sends a heartbeat (with a host snapshot naming `hostname`). */
  heartbeat(): void;
  /** Ends the session without Goodbye (the worker turns UNKNOWN). */
  drop(): void;
  /** Says Goodbye and ends the session (the worker turns OFFLINE). */
  leave(): Promise<void>;
}

export async function startScriptedRunner(
  address: string,
  workerId: string,
  options: { labels?: Record<string, string>; capacity?: number; hostname?: string; heartbeatEveryMs?: number } = {},
): Promise<ScriptedRunner> {
  const client = createClient(RunnerService, createGrpcTransport({ baseUrl: `http://${address}` }));
  const outgoing = new Channel<SessionRequest>();
  const abort = new AbortController();
  const send = (message: MessageInitShape<typeof SessionRequestSchema>["message"]) => outgoing.push(create(SessionRequestSchema, { message }));
  const assigned: string[] = [];
  let sequence = 0n;
  const heartbeat = () =>
    send({ case: "heartbeat", value: { sequence: ++sequence, attemptIds: [], snapshot: { hostname: options.hostname ?? workerId, cpu: { usagePercent: 50 } } } });
  send({ case: "hello", value: { workerId, labels: options.labels ?? {}, capacity: options.capacity ?? 1 } });
  const responses = client.session(outgoing, { signal: abort.signal });
  const welcomed = new Promise<void>((resolve, reject) => {
    void (async () => {
      try {
        for await (const response of responses) {
          const message = response.message;
          if (message.case === "welcome") {
            heartbeat();
            send({ case: "ready", value: { slots: options.capacity ?? 1 } });
            resolve();
          } else if (message.case === "assignment") {
            const attempt = message.value.attempt!;
            assigned.push(attempt.attemptId);
            const input = message.value.rollout?.input;
            const script = input === undefined ? {} : (toJson(ValueSchema, input) as { outcome?: string; result?: JsonValue });
            const outcome = script.outcome ?? "succeed";
            if (outcome === "silent") continue;
            send({
              case: "attemptUpdate",
              value: {
                attemptId: attempt.attemptId,
                status: outcome === "fail" ? AttemptStatus.FAILED : AttemptStatus.SUCCEEDED,
                errorMessage: outcome === "fail" ? "boom" : "",
                ...(outcome !== "fail" && script.result !== undefined && { result: fromJson(ValueSchema, script.result) }),
              },
            });
            send({ case: "ready", value: { slots: 1 } });
          }
        }
      } catch (error) {
        reject(error);
      }
    })();
  });
  await welcomed;
  const beating = options.heartbeatEveryMs === undefined ? undefined : setInterval(heartbeat, options.heartbeatEveryMs);
  beating?.unref();
  return {
    assigned,
    heartbeat,
    drop() {
      clearInterval(beating);
      abort.abort();
    },
    async leave() {
      clearInterval(beating);
      send({ case: "goodbye", value: { reason: "test done" } });
      outgoing.end();
      await new Promise((resolve) => setTimeout(resolve, 50));
      abort.abort();
    },
  };
}
