#!/usr/bin/python3
"""Interop check: a Python grpcio client, built only from stubs that protoc generated
from proto/runnerline/v1/*.proto, drives a Runnerline server through a full rollout.

Run by test/interop/python.test.ts:
    /usr/bin/python3 test/interop/python_client.py --target 127.0.0.1:PORT --stubs DIR

Prints one line per step; exits 0 when every check passed, 1 on a mismatch or RPC
error, 2 when the whole run exceeded --deadline seconds.
"""

import argparse
import os
import queue
import signal
import sys
import threading
import time
import traceback


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="host:port of the gRPC server")
    parser.add_argument("--stubs", required=True, help="directory with the generated runnerline/v1/*_pb2*.py")
    parser.add_argument("--heartbeat-ms", type=int, default=0, help="expected Welcome.heartbeat_interval (0: any)")
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds for the whole run")
    return parser.parse_args()


ARGS = parse_args()


def on_alarm(signum, frame):
    print(f"FAIL: the whole run took longer than {ARGS.deadline:.0f} s", flush=True)
    os._exit(2)


signal.signal(signal.SIGALRM, on_alarm)
signal.alarm(int(ARGS.deadline))

sys.path.insert(0, ARGS.stubs)

import grpc  # noqa: E402
from google.protobuf import duration_pb2, json_format, struct_pb2  # noqa: E402
from runnerline.v1 import attempt_pb2, rollout_pb2, rollout_pb2_grpc  # noqa: E402
from runnerline.v1 import runner_pb2, runner_pb2_grpc, worker_pb2, worker_pb2_grpc  # noqa: E402

CALL_TIMEOUT = 10.0  # seconds, for every unary call
MESSAGE_TIMEOUT = 10.0  # seconds to wait for one session message


class Mismatch(Exception):
    pass


def step(text):
    print(f"ok: {text}", flush=True)


def expect(condition, what):
    if not condition:
        raise Mismatch(what)


def eventually(read, check, what, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise Mismatch(f"{what}; last seen:\n{value}")
        time.sleep(0.05)


class Session:
    """RunnerService.Session: requests from a generator fed by a queue, responses read on a thread."""

    _CLOSE = object()

    def __init__(self, stub):
        self._outgoing = queue.Queue()
        self._incoming = queue.Queue()
        self._lock = threading.Lock()
        self._sequence = 0
        self.acked = []  # HeartbeatAck.sequence values, in arrival order
        self._call = stub.Session(self._requests(), timeout=ARGS.deadline)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _requests(self):
        while True:
            item = self._outgoing.get()
            if item is self._CLOSE:
                return
            yield item

    def _read(self):
        try:
            for response in self._call:
                self._incoming.put(response)
            self._incoming.put(RuntimeError("session stream ended"))
        except Exception as error:  # grpc.RpcError when the call fails
            self._incoming.put(error)

    def send(self, **message):
        self._outgoing.put(runner_pb2.SessionRequest(**message))

    def heartbeat(self, attempt_ids=()):
        with self._lock:
            self._sequence += 1
            sequence = self._sequence
            self.send(heartbeat=runner_pb2.Heartbeat(sequence=sequence, attempt_ids=list(attempt_ids)))
        return sequence

    def next(self, kind, timeout=MESSAGE_TIMEOUT):
        """The next response of `kind`, recording heartbeat acks on the way; any other kind is a mismatch."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Mismatch(f"no {kind} within {timeout:.0f} s")
            try:
                item = self._incoming.get(timeout=remaining)
            except queue.Empty:
                raise Mismatch(f"no {kind} within {timeout:.0f} s") from None
            if isinstance(item, Exception):
                raise Mismatch(f"session failed while waiting for {kind}: {item!r}")
            got = item.WhichOneof("message")
            if got == "heartbeat_ack":
                self.acked.append(item.heartbeat_ack.sequence)
            if got == kind:
                return getattr(item, got)
            if got != "heartbeat_ack":
                raise Mismatch(f"expected {kind}, got {got}: {item}")

    def close(self):
        self._outgoing.put(self._CLOSE)
        self._reader.join(timeout=5)
        self._call.cancel()


class Heartbeater(threading.Thread):
    """Heartbeats at the interval Welcome asked for, listing the attempts held, like a real runner."""

    def __init__(self, session, interval_s):
        super().__init__(daemon=True)
        self.session = session
        self.interval_s = interval_s
        self.attempt_ids = []
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(self.interval_s):
            self.session.heartbeat(self.attempt_ids)


def main():
    channel = grpc.insecure_channel(ARGS.target)
    grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT)
    step(f"connected to {ARGS.target} (grpcio {grpc.__version__})")
    rollouts = rollout_pb2_grpc.RolloutServiceStub(channel)
    workers = worker_pb2_grpc.WorkerServiceStub(channel)
    runners = runner_pb2_grpc.RunnerServiceStub(channel)
    FAILED = attempt_pb2.ATTEMPT_STATUS_FAILED

    # -- enqueue a rollout with a JSON input and a retry policy -------------------------------
    task = {"task": "add", "a": 2, "b": 3.5, "tags": ["x", None, True], "nested": {"k": "v"}}
    rollout_id = f"py-interop-{os.getpid()}"
    enqueued = rollouts.EnqueueRollout(
        rollout_pb2.EnqueueRolloutRequest(
            rollout_id=rollout_id,
            input=json_format.ParseDict(task, struct_pb2.Value()),
            mode=rollout_pb2.ROLLOUT_MODE_TRAIN,
            config=rollout_pb2.RolloutConfig(max_attempts=2, retry_on=[FAILED]),
        ),
        timeout=CALL_TIMEOUT,
    ).rollout
    expect(enqueued.rollout_id == rollout_id, f"enqueued rollout_id {enqueued.rollout_id!r}")
    expect(enqueued.status == rollout_pb2.ROLLOUT_STATUS_QUEUING, f"enqueued status {enqueued.status}")
    expect(list(enqueued.config.retry_on) == [FAILED], f"enqueued retry_on {enqueued.config.retry_on}")
    step(f"EnqueueRollout {rollout_id}: QUEUING, max_attempts 2, retry_on FAILED")

    # -- open the runner session ----------------------------------------------------------------
    worker_id = f"py-worker-{os.getpid()}"
    session = Session(runners)
    session.send(hello=runner_pb2.Hello(worker_id=worker_id, capacity=1, labels={"lang": "python"}, client_version="interop"))
    welcome = session.next("welcome")
    interval_ms = welcome.heartbeat_interval.ToMilliseconds()
    expect(welcome.session_id != "", "Welcome.session_id is empty")
    if ARGS.heartbeat_ms:
        expect(interval_ms == ARGS.heartbeat_ms, f"Welcome.heartbeat_interval {interval_ms} ms, want {ARGS.heartbeat_ms}")
    step(f"Session: Hello -> Welcome (session {welcome.session_id}, heartbeat every {interval_ms} ms)")

    sequence = session.heartbeat()
    session.next("heartbeat_ack")
    expect(session.acked == [sequence], f"HeartbeatAck sequences {session.acked}, want [{sequence}]")
    step(f"Heartbeat {sequence} -> HeartbeatAck {session.acked[-1]}")
    beats = Heartbeater(session, max(interval_ms, 50) / 1000.0)
    beats.start()

    session.send(ready=runner_pb2.Ready(slots=1))
    first = session.next("assignment")
    expect(first.rollout.rollout_id == rollout_id, f"assignment for {first.rollout.rollout_id!r}")
    expect(first.attempt.sequence_id == 1, f"first attempt sequence_id {first.attempt.sequence_id}")
    expect(first.attempt.worker_id == worker_id, f"first attempt worker_id {first.attempt.worker_id!r}")
    got_input = json_format.MessageToDict(first.rollout.input)
    expect(got_input == task, f"assignment input {got_input!r}, want {task!r}")
    beats.attempt_ids = [first.attempt.attempt_id]
    step(f"Ready -> Assignment {first.attempt.attempt_id} (sequence_id 1, input round-tripped)")

    worker = workers.GetWorker(worker_pb2.GetWorkerRequest(worker_id=worker_id), timeout=CALL_TIMEOUT).worker
    expect(worker.status == worker_pb2.WORKER_STATUS_BUSY, f"worker status {worker.status}, want BUSY")
    expect(list(worker.current_attempt_ids) == [first.attempt.attempt_id], f"worker attempts {worker.current_attempt_ids}")
    step("GetWorker: BUSY with the attempt")

    def get_rollout():
        return rollouts.GetRollout(rollout_pb2.GetRolloutRequest(rollout_id=rollout_id), timeout=CALL_TIMEOUT).rollout

    session.send(attempt_update=runner_pb2.AttemptUpdate(attempt_id=first.attempt.attempt_id, status=attempt_pb2.ATTEMPT_STATUS_RUNNING))
    eventually(get_rollout, lambda r: r.status == rollout_pb2.ROLLOUT_STATUS_RUNNING, "rollout never became RUNNING")
    step("AttemptUpdate RUNNING -> rollout RUNNING")

    beats.attempt_ids = []
    session.send(
        attempt_update=runner_pb2.AttemptUpdate(
            attempt_id=first.attempt.attempt_id,
            status=FAILED,
            error_message="flaky tool",
            metadata=json_format.ParseDict({"stage": "tool-call"}, struct_pb2.Struct()),
        )
    )
    session.send(ready=runner_pb2.Ready(slots=1))
    second = session.next("assignment")
    expect(second.rollout.rollout_id == rollout_id, f"retry for {second.rollout.rollout_id!r}")
    expect(second.attempt.sequence_id == 2, f"retry sequence_id {second.attempt.sequence_id}, want 2")
    expect(second.attempt.attempt_id != first.attempt.attempt_id, "retry reused the first attempt id")
    beats.attempt_ids = [second.attempt.attempt_id]
    step(f"AttemptUpdate FAILED + Ready -> retry Assignment {second.attempt.attempt_id} (sequence_id 2)")

    session.send(attempt_update=runner_pb2.AttemptUpdate(attempt_id=second.attempt.attempt_id, status=attempt_pb2.ATTEMPT_STATUS_RUNNING))
    session.send(attempt_update=runner_pb2.AttemptUpdate(attempt_id=second.attempt.attempt_id, status=attempt_pb2.ATTEMPT_STATUS_SUCCEEDED))
    beats.attempt_ids = []
    step("AttemptUpdate RUNNING, SUCCEEDED sent")

    # -- queries ----------------------------------------------------------------------------------
    waited = rollouts.WaitRollouts(
        rollout_pb2.WaitRolloutsRequest(rollout_ids=[rollout_id], timeout=duration_pb2.Duration(seconds=10)),
        timeout=CALL_TIMEOUT + 5,
    ).rollouts
    expect(len(waited) == 1, f"WaitRollouts returned {len(waited)} rollouts, want 1")
    done = waited[0]
    expect(done.status == rollout_pb2.ROLLOUT_STATUS_SUCCEEDED, f"rollout status {rollout_pb2.RolloutStatus.Name(done.status)}")
    expect(done.attempt_count == 2, f"attempt_count {done.attempt_count}, want 2")
    expect(done.latest_attempt_id == second.attempt.attempt_id, f"latest_attempt_id {done.latest_attempt_id!r}")
    step("WaitRollouts: SUCCEEDED, attempt_count 2")

    worker = eventually(
        lambda: workers.GetWorker(worker_pb2.GetWorkerRequest(worker_id=worker_id), timeout=CALL_TIMEOUT).worker,
        lambda w: w.status == worker_pb2.WORKER_STATUS_IDLE,
        "worker never returned to IDLE",
    )
    expect(list(worker.current_attempt_ids) == [], f"idle worker still holds {worker.current_attempt_ids}")
    expect(worker.connected, "worker not connected")
    expect(dict(worker.labels) == {"lang": "python"}, f"worker labels {dict(worker.labels)}")
    step("GetWorker: IDLE, connected, no attempts, labels kept")

    beats.stopped.set()
    beats.join(timeout=5)
    sequence = session.heartbeat()
    session.next("heartbeat_ack")
    expect(session.acked == sorted(session.acked), f"HeartbeatAck sequences out of order: {session.acked}")
    expect(session.acked[-1] == sequence, f"last HeartbeatAck {session.acked[-1]}, want {sequence}")
    step(f"{len(session.acked)} HeartbeatAcks, in order, last {sequence}")
    session.send(goodbye=runner_pb2.Goodbye(reason="interop test done"))
    session.close()
    step("Goodbye, session closed")

    try:
        rollouts.GetRollout(rollout_pb2.GetRolloutRequest(rollout_id="ro-does-not-exist"), timeout=CALL_TIMEOUT)
        raise Mismatch("GetRollout on an unknown id succeeded")
    except grpc.RpcError as error:
        expect(error.code() == grpc.StatusCode.NOT_FOUND, f"GetRollout unknown id: {error.code()} {error.details()}")
    step("GetRollout unknown id -> NOT_FOUND")

    try:
        rollouts.ListRollouts(rollout_pb2.ListRolloutsRequest(order_by="colour"), timeout=CALL_TIMEOUT)
        raise Mismatch('ListRollouts order_by "colour" succeeded')
    except grpc.RpcError as error:
        expect(error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"ListRollouts colour: {error.code()} {error.details()}")
    step('ListRollouts order_by "colour" -> INVALID_ARGUMENT')

    undecodable_requests(channel)

    channel.close()
    print("PASS", flush=True)


def undecodable_requests(channel):
    """Bytes that are no protobuf message, sent with no serializer: INVALID_ARGUMENT, never INTERNAL or a hang."""
    get_worker = channel.unary_unary("/runnerline.v1.WorkerService/GetWorker", request_serializer=None, response_deserializer=None)
    try:
        get_worker(b"\xff", timeout=CALL_TIMEOUT)
        raise Mismatch("GetWorker with undecodable bytes succeeded")
    except grpc.RpcError as error:
        expect(error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"GetWorker b'\\xff': {error.code()} {error.details()}")
    step("GetWorker with undecodable bytes -> INVALID_ARGUMENT")

    # Hello, Heartbeat, then one undecodable frame: the stream must end with a status every time.
    session = channel.stream_stream("/runnerline.v1.RunnerService/Session", request_serializer=None, response_deserializer=None)
    for i in range(10):
        frames = [
            runner_pb2.SessionRequest(hello=runner_pb2.Hello(worker_id=f"py-garbled-{i}", capacity=1)).SerializeToString(),
            runner_pb2.SessionRequest(heartbeat=runner_pb2.Heartbeat(sequence=1)).SerializeToString(),
            b"\xff",
        ]
        received = []
        try:
            for response in session(iter(frames), timeout=CALL_TIMEOUT):
                received.append(runner_pb2.SessionResponse.FromString(response).WhichOneof("message"))
            raise Mismatch(f"session {i} with an undecodable frame ended OK after {received}")
        except grpc.RpcError as error:
            expect(
                error.code() == grpc.StatusCode.INVALID_ARGUMENT,
                f"session {i} with an undecodable frame: {error.code()} {error.details()} after {received}",
            )
    step("10 sessions: Hello, Heartbeat, undecodable frame -> INVALID_ARGUMENT each")


def run():
    try:
        main()
        return 0
    except Mismatch as mismatch:
        print(f"FAIL: {mismatch}", flush=True)
    except grpc.RpcError as error:
        print(f"FAIL: RPC error {error.code()}: {error.details()}", flush=True)
    except Exception:
        print("FAIL: unexpected error", flush=True)
        traceback.print_exc()
    return 1


if __name__ == "__main__":
    code = run()
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: neither the session's threads nor grpc's may keep the process alive.
    os._exit(code)
