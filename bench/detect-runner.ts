/**
 * A runner for the detection scenario, in its own process so that it can die
 * for real: it takes one assignment, reports it RUNNING, heartbeats with the
 * attempt listed every `interval` ms and tells the bench about each ack. On
 * "die" it SIGKILLs itself right after its next acknowledged heartbeat (the
 * kernel closes the socket); on "hang" it stops sending right after its next
 * acknowledged heartbeat and the bench SIGSTOPs it (socket open, silent).
 *
 *   tsx bench/detect-runner.ts ADDRESS WORKER_ID INTERVAL_MS
 */
import { AttemptStatus } from "../src/gen/runnerline/v1/attempt_pb.js";
import type { SessionResponse } from "../src/gen/runnerline/v1/runner_pb.js";
import { encodeRequest, HeartbeatEncoder, newChannel, openSession, syntheticSnapshot, wallMs } from "./lib/wire.js";

const [address = "", workerId = "", intervalText = "500"] = process.argv.slice(2);
const intervalMs = Number(intervalText);
const call = openSession(newChannel(address));
let encoder = new HeartbeatEncoder(syntheticSnapshot(0));
let attemptId = "";
let sequence = 0;
let lastBeatAt = 0;
let ending: "die" | "hang" | undefined;
let timer: NodeJS.Timeout | undefined;

const beat = () => {
  lastBeatAt = wallMs();
  call.write(encoder.encode(++sequence));
};

call.on("data", (response: SessionResponse) => {
  const message = response.message;
  if (message.case === "welcome") {
    call.write(encodeRequest({ case: "ready", value: { slots: 1 } }));
  } else if (message.case === "assignment" && attemptId === "") {
    attemptId = message.value.attempt?.attemptId ?? "";
    call.write(encodeRequest({ case: "attemptUpdate", value: { attemptId, status: AttemptStatus.RUNNING } }));
    encoder = new HeartbeatEncoder(syntheticSnapshot(0), [attemptId]);
    beat();
    timer = setInterval(beat, intervalMs);
    process.send!({ event: "holding", attemptId });
  } else if (message.case === "heartbeatAck" && attemptId !== "") {
    if (ending !== undefined) {
      clearInterval(timer);
      // The last sign of life the server got from us was the beat just acknowledged.
      process.send!({ event: "silent", lastBeatAt, how: ending }, () => {
        if (ending === "die") process.kill(process.pid, "SIGKILL");
      });
    }
  }
});
call.on("error", () => {});
call.write(encodeRequest({ case: "hello", value: { workerId, capacity: 1, clientVersion: "runnerline-bench" } }));

process.on("message", (message: { command: "die" | "hang" }) => {
  ending = message.command;
});
