"""A runner process and its signals: the first SIGINT/SIGTERM drains, the second aborts."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import eventually, unique
from runnerline import Client
from runnerline.v1 import attempt_pb2, attempt_pb2_grpc, worker_pb2

RUNNER_SCRIPT = """
import sys, time
from runnerline import Runner

def handler(job):
    print("started", job.attempt_id, flush=True)
    if job.input.get("until_cancelled"):
        job.cancelled.wait(60)
        print("handler saw:", job.cancel_reason, flush=True)
        return "too late"
    time.sleep(job.input["sleep"])
    return {"slept": job.input["sleep"]}

Runner(sys.argv[1], worker_id=sys.argv[2]).run(handler)
print("run() returned", flush=True)
"""


class RunnerProcess:
    def __init__(self, tmp_path: Path, address: str, worker_id: str):
        script = tmp_path / "my_runner.py"
        script.write_text(RUNNER_SCRIPT)
        self.lines: list = []
        self.process = subprocess.Popen([sys.executable, str(script), address, worker_id], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        eventually(lambda: "".join(self.lines), lambda out: text in out, f"{text!r} never appeared", timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()


@pytest.fixture
def runner_process(tmp_path):
    started = []

    def start(address: str, worker_id: str) -> RunnerProcess:
        made = RunnerProcess(tmp_path, address, worker_id)
        started.append(made)
        return made

    yield start
    for made in started:
        made.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_first_signal_drains(server, stubs, runner_process, signum):
    worker_id = unique("py-sig-drain")
    runner = runner_process(server.address, worker_id)
    with Client(server.address) as client:
        rollout = client.enqueue({"sleep": 1.5})
        runner.wait_for("started")
        runner.process.send_signal(signum)
        time.sleep(0.5)
        assert runner.process.poll() is None, "it exited before the held attempt finished"
        assert runner.process.wait(20) == 0, "".join(runner.lines)
        # run() returns only after the server acknowledged the result: no waiting needed here.
        done = client.get(rollout)
        assert done["status"] == "SUCCEEDED" and done["result"] == {"slept": 1.5}
    assert "run() returned" in "".join(runner.lines)
    worker = eventually(lambda: stubs.worker(worker_id), lambda w: not w.connected, "the worker stayed connected")
    assert worker.status == worker_pb2.WORKER_STATUS_OFFLINE  # it said Goodbye
    assert list(worker.current_attempt_ids) == []


def test_the_second_signal_aborts_reporting_held_attempts_failed(server, stubs, runner_process):
    worker_id = unique("py-sig-abort")
    runner = runner_process(server.address, worker_id)
    with Client(server.address) as client:
        rollout = client.enqueue({"until_cancelled": True})
        runner.wait_for("started")
        runner.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert runner.process.poll() is None
        runner.process.send_signal(signal.SIGTERM)
        began = time.monotonic()
        assert runner.process.wait(10) == 0, "".join(runner.lines)
        # The stream closes within ~2 s; the process exits a little after (a snapshot in flight may finish first).
        assert time.monotonic() - began < 6.0, "the abort took far longer than its ~2 s grace"
        done = client.get(rollout)
    assert "handler saw: the runner was stopped" in "".join(runner.lines)
    assert done["status"] == "FAILED", done
    attempts = attempt_pb2_grpc.AttemptServiceStub(stubs.channel)
    attempt = attempts.GetAttempt(attempt_pb2.GetAttemptRequest(attempt_id=done["latest_attempt_id"]), timeout=10).attempt
    assert attempt.status == attempt_pb2.ATTEMPT_STATUS_FAILED
    assert attempt.error.message == "the runner was stopped"
    worker = eventually(lambda: stubs.worker(worker_id), lambda w: not w.connected, "the worker stayed connected")
    assert worker.status == worker_pb2.WORKER_STATUS_OFFLINE
