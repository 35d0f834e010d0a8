"""The session protocol as the Runner speaks it: refusals, tokens, a replaced session, reconnect and resume
across a server restart, the server's Drain, credits and the lean options, heartbeats listing attempts."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter

import grpc
import pytest

from conftest import eventually, raw_session, tally, unique
from runnerline import Client, Job, Runner, RunnerRefusedError, SessionReplacedError
from runnerline.v1 import attempt_pb2, attempt_pb2_grpc, telemetry_pb2


def fast(address: str, **options) -> Runner:
    return Runner(address, reconnect_initial_delay=0.05, reconnect_max_delay=0.3, **options)


def events(runner: Runner) -> Counter:
    seen: Counter = Counter()
    runner.add_listener(lambda event, value: seen.update([event]))
    return seen


def test_a_hello_refused_for_good_raises_instead_of_reconnecting(server, background):
    # The SDK accepts any positive capacity; the server refuses more than 1024 with INVALID_ARGUMENT.
    runner = fast(server.address, worker_id=unique("py-refused"), capacity=5000)
    seen = events(runner)
    run = background(runner, lambda job: None)
    run.join()
    assert isinstance(run.error, RunnerRefusedError)
    assert run.error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "hello.capacity must be between 0 and 1024" in str(run.error)
    assert runner.status["state"] == "stopped"
    assert seen["disconnected"] == 1  # one try, no retry loop


def test_tokens_are_sent_and_bad_ones_refused(own_server, tmp_path):
    tokens = {"runner-secret": ("fleet", "runner", ["py-tok-*"]), "admin-secret": ("trainer", "admin", None)}
    auth = {"tokens": [
        {"name": name, "role": role, "sha256": hashlib.sha256(token.encode()).hexdigest(), **({"workers": workers} if workers else {})}
        for token, (name, role, workers) in tokens.items()
    ]}
    (tmp_path / "auth.json").write_text(json.dumps(auth))
    server = own_server(extra=["--auth-file", str(tmp_path / "auth.json")])

    def outcome(**options):
        runner = fast(server.address, **options)
        done = {}
        thread = threading.Thread(target=lambda: done.setdefault("error", _run_once(runner)), daemon=True)
        thread.start()
        return runner, thread, done

    runner, thread, done = outcome(worker_id="py-tok-1", token="runner-secret")
    with Client(server.address, token="admin-secret") as client:
        rollout = client.enqueue({"n": 1})
        (finished,) = client.wait([rollout], timeout=20)
        assert finished["result"] == {"n": 1}
        with Client(server.address) as anonymous, pytest.raises(Exception) as error:
            anonymous.enqueue({})
        assert error.value.code.name == "UNAUTHENTICATED"
    runner.stop(drain=True)
    thread.join(10)
    assert done["error"] is None

    for options, code in [({"worker_id": "py-tok-2", "token": "wrong"}, "UNAUTHENTICATED"),
                          ({"worker_id": "elsewhere", "token": "runner-secret"}, "PERMISSION_DENIED")]:
        runner, thread, done = outcome(**options)
        thread.join(20)
        assert isinstance(done["error"], RunnerRefusedError), done
        assert done["error"].code.name == code


def _run_once(runner: Runner):
    try:
        runner.run(lambda job: job.input, handle_signals=False)
        return None
    except Exception as error:  # noqa: BLE001 - the test inspects it
        return error


def test_a_session_replaced_by_another_process_stops_the_runner_with_the_worker_id(server, background):
    worker_id = unique("py-dup")
    runner = fast(server.address, worker_id=worker_id)
    seen = events(runner)
    run = background(runner, lambda job: None)
    eventually(lambda: runner.status["connected"], bool, "the runner never connected")
    welcome, close = raw_session(server.address, worker_id)
    try:
        run.join()
        assert isinstance(run.error, SessionReplacedError)
        assert run.error.worker_id == worker_id
        assert worker_id in str(run.error)
        assert seen["connected"] == 1  # it did not come back to take the worker from the newer session
    finally:
        close()


def test_reconnects_and_resumes_an_attempt_across_a_server_restart(own_server, tmp_path):
    server = own_server(store=f"sqlite:{tmp_path / 'runnerline.db'}")
    runner = fast(server.address, worker_id=unique("py-restart"))
    welcomes = []
    runner.add_listener(lambda event, value: welcomes.append(list(value.resumed_attempt_ids)) if event == "connected" else None)
    release = threading.Event()
    started = threading.Event()

    def handler(job: Job):
        started.set()
        release.wait(30)
        return {"finished_while": "offline"}

    thread = threading.Thread(target=lambda: runner.run(handler, handle_signals=False), daemon=True)
    thread.start()
    with Client(server.address) as client:
        # The server notices silent attempts after unresponsive_timeout (default: its heartbeat grace, 0.6 s here).
        rollout = client.enqueue({"long": True}, config={"unresponsive_timeout": "60s"})
        assert started.wait(20)
        attempt_id = runner.status["held_attempt_ids"][0]
    server.kill()  # a crash: no Drain, the stream just breaks
    eventually(lambda: runner.status["connected"], lambda c: not c, "the runner did not notice the crash")
    release.set()  # the result is produced while no server is there; it waits for the next session
    time.sleep(0.5)
    server.start()
    eventually(lambda: len(welcomes), lambda n: n >= 2, "the runner did not reconnect", timeout=30)
    assert welcomes[1] == [attempt_id]
    with Client(server.address) as client:
        (done,) = client.wait([rollout], timeout=20)
        assert done["status"] == "SUCCEEDED" and done["result"] == {"finished_while": "offline"}
        assert done["attempt_count"] == 1
        # The credit came back with the result on the new session: the next rollout arrives.
        (after,) = client.wait([client.enqueue({"after": True})], timeout=20)
        assert after["status"] == "SUCCEEDED"
    runner.stop(drain=True)
    thread.join(10)


def test_the_servers_drain_lets_held_work_finish_then_the_runner_comes_back(own_server, tmp_path):
    server = own_server(store=f"sqlite:{tmp_path / 'runnerline.db'}")
    runner = fast(server.address, worker_id=unique("py-drain"))
    seen = events(runner)
    release = threading.Event()
    thread = threading.Thread(target=lambda: runner.run(lambda job: release.wait(30) and "drained", handle_signals=False), daemon=True)
    thread.start()
    with Client(server.address) as client:
        rollout = client.enqueue({})
        eventually(lambda: runner.status["held_attempt_ids"], bool, "no assignment")
    stopping = threading.Thread(target=server.stop, daemon=True)
    stopping.start()  # SIGTERM: the server sends Drain and waits for held attempts
    eventually(lambda: seen["drain"], bool, "no Drain reached the runner")
    release.set()
    stopping.join(20)
    assert server.process.returncode == 0
    assert "no runner holds an attempt" in "".join(server.output) or "drain finished" in "".join(server.output)
    server.start()
    eventually(lambda: seen["connected"], lambda n: n >= 2, "the runner did not come back", timeout=30)
    with Client(server.address) as client:
        done = client.get(rollout)
        assert done["status"] == "SUCCEEDED" and done["result"] == "drained"
    runner.stop(drain=True)
    thread.join(10)


def test_credits_come_back_with_results_and_assignments_come_in_batches(server, background):
    """The lean options: one Ready for the first slots, none after each result, batches when several are due."""
    with Client(server.address) as client:
        rollouts = client.enqueue_many([{"i": i} for i in range(12)])
        runner = Runner(server.address, worker_id=unique("py-lean"), capacity=3)
        upstream, downstream = tally(runner)
        welcome = {}
        runner.add_listener(lambda event, value: welcome.setdefault("w", value) if event == "connected" else None)
        run = background(runner, lambda job: job.input)
        results = list(client.wait(rollouts, timeout=30))
        assert [r["status"] for r in results] == ["SUCCEEDED"] * 12
        runner.stop(drain=True)
        run.join()
    assert welcome["w"].terminal_update_returns_credit and welcome["w"].assignment_batches
    assert upstream["attempt_update"] == 24  # RUNNING and SUCCEEDED per rollout
    assert upstream["ready"] == 1  # Ready{3} after Welcome; every result returned its own credit
    assert downstream["assignment_batch"] >= 1  # all 12 were queued: the first 3 credits took 3 at once


def test_heartbeats_list_held_attempts_so_long_ones_stay_alive(server, stubs, background):
    """The server's grace is 3 heartbeats (0.6 s here); an attempt that runs 2.5 s lives on the heartbeats' attempt_ids."""
    runner = Runner(server.address, worker_id=unique("py-long"))
    background(runner, lambda job: time.sleep(2.5) or "slow")
    with Client(server.address) as client:
        rollout = client.enqueue({}, config={"max_attempts": 1})
        (done,) = client.wait([rollout], timeout=20)
    assert done["status"] == "SUCCEEDED" and done["attempt_count"] == 1
    attempts = attempt_pb2_grpc.AttemptServiceStub(stubs.channel)
    attempt = attempts.GetAttempt(attempt_pb2.GetAttemptRequest(attempt_id=done["latest_attempt_id"]), timeout=10).attempt
    assert attempt.status == attempt_pb2.ATTEMPT_STATUS_SUCCEEDED


def refusing_server(code: grpc.StatusCode, details: str):
    """A RunnerService that ends every session with one status after the first message, as an overloaded or
    authenticating server would."""
    from concurrent import futures

    from runnerline.v1 import runner_pb2_grpc

    class Refusing(runner_pb2_grpc.RunnerServiceServicer):
        def Session(self, request_iterator, context):
            next(request_iterator)
            context.abort(code, details)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    runner_pb2_grpc.add_RunnerServiceServicer_to_server(Refusing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return f"127.0.0.1:{port}", server


def test_keeps_retrying_with_back_off_on_a_status_a_retry_may_cure(background):
    address, refusing = refusing_server(grpc.StatusCode.UNAVAILABLE, "overloaded")
    try:
        runner = Runner(address, worker_id=unique("py-retry"), reconnect_initial_delay=0.02, reconnect_max_delay=0.1)
        seen = events(runner)
        background(runner, lambda job: None)
        time.sleep(1.0)
        assert runner.status["state"] == "running"
        # Bounded by the back-off (at least 50 ms apart once it reached 0.1 s), not a busy loop.
        assert 3 <= seen["disconnected"] <= 40, seen
    finally:
        refusing.stop(None)


def test_no_heartbeats_after_stop(server, background):
    collections = []
    runner = Runner(server.address, worker_id=unique("py-quiet"), collect_snapshot=lambda: collections.append(1) or telemetry_pb2.SystemSnapshot(hostname="test-host"))
    acks = events(runner)
    run = background(runner, lambda job: None)
    eventually(lambda: acks["heartbeat_ack"], lambda n: n >= 2, "no heartbeats acknowledged")
    runner.stop()
    run.join()
    assert runner.status["state"] == "stopped" and not runner.status["connected"]
    after = len(collections)
    time.sleep(0.6)  # three heartbeat intervals of the test server
    assert len(collections) == after


def test_an_operator_drain_finishes_the_job_in_hand_then_run_returns(server, background):
    from runnerline.v1 import worker_pb2, worker_pb2_grpc

    worker_id = unique("py-drained")
    runner = fast(server.address, worker_id=worker_id)
    release = threading.Event()
    started = threading.Event()

    def handler(job: Job):
        started.set()
        release.wait(30)
        return {"done": True}

    run = background(runner, handler)
    with Client(server.address) as client:
        rollout = client.enqueue({"maintenance": True})
        assert started.wait(20)
        with grpc.insecure_channel(server.address) as channel:
            worker_pb2_grpc.WorkerServiceStub(channel).DrainWorker(worker_pb2.DrainWorkerRequest(worker_id=worker_id, reason="host maintenance"))
        time.sleep(0.3)
        assert run.thread.is_alive()  # the job in hand is not abandoned
        release.set()
        run.join()
        assert run.error is None
        assert client.get(rollout["rollout_id"])["status"] == "SUCCEEDED"
