"""A real Runnerline server process for the SDK's tests: `node bin/runnerline.mjs serve` on free ports."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, List, Optional

import grpc
import pytest

from runnerline.v1 import rollout_pb2_grpc, runner_pb2, runner_pb2_grpc, worker_pb2, worker_pb2_grpc

REPO = Path(os.environ.get("RUNNERLINE_REPO", Path(__file__).resolve().parents[2]))
NODE = os.environ.get("RUNNERLINE_NODE") or shutil.which("node") or "node"
HEARTBEAT_S = 0.2
SERVING = re.compile(r"serving gRPC on [^:]+:(\d+)")


class Server:
    """One server process; restart() keeps its port (and its store, when that is a file)."""

    def __init__(self, store: str = "memory", port: int = 0, extra: Optional[List[str]] = None):
        self.store = store
        self.port = port
        self.extra = extra or []
        self.process: Optional[subprocess.Popen] = None
        self.output: List[str] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "Server":
        args = [NODE, str(REPO / "bin/runnerline.mjs"), "serve", "--store", self.store, "--grpc-addr", f"127.0.0.1:{self.port}",
                "--http-addr", "127.0.0.1:0", "--heartbeat-interval", str(HEARTBEAT_S), "--drain-timeout", "3", *self.extra]
        self.process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        found = threading.Event()

        def read(process: subprocess.Popen) -> None:
            for line in process.stdout:  # type: ignore[union-attr]
                self.output.append(line)
                match = SERVING.search(line)
                if match and not found.is_set():
                    self.port = int(match.group(1))
                    found.set()

        threading.Thread(target=read, args=(self.process,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("the server did not start:\n" + "".join(self.output))
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM: the server drains its runners (at most --drain-timeout), then exits."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def server():
    running = Server().start()
    yield running
    running.kill()


@pytest.fixture
def own_server():
    """A server for one test (restarts, drains, auth), stopped after it."""
    servers: List[Server] = []

    def make(**kwargs) -> Server:
        created = Server(**kwargs).start()
        servers.append(created)
        return created

    yield make
    for created in servers:
        created.kill()


class Stubs:
    def __init__(self, address: str):
        self.channel = grpc.insecure_channel(address)
        self.rollouts = rollout_pb2_grpc.RolloutServiceStub(self.channel)
        self.workers = worker_pb2_grpc.WorkerServiceStub(self.channel)
        self.runners = runner_pb2_grpc.RunnerServiceStub(self.channel)

    def worker(self, worker_id: str) -> worker_pb2.Worker:
        return self.workers.GetWorker(worker_pb2.GetWorkerRequest(worker_id=worker_id), timeout=10).worker


@pytest.fixture
def stubs(server):
    made = Stubs(server.address)
    yield made
    made.channel.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def eventually(read: Callable, check: Callable, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}; last seen: {value!r}")
        time.sleep(0.05)


class Background:
    """Runner.run on a thread (signals are the main thread's); error holds what run() raised."""

    def __init__(self, runner, handler):
        self.runner = runner
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, args=(handler,), daemon=True)
        self.thread.start()

    def _run(self, handler) -> None:
        try:
            self.runner.run(handler, handle_signals=False)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            self.error = error

    def join(self, timeout: float = 20.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the runner did not stop"


@pytest.fixture
def background():
    started: List[Background] = []

    def start(runner, handler) -> Background:
        made = Background(runner, handler)
        started.append(made)
        return made

    yield start
    for made in started:
        made.runner.stop()
        made.thread.join(10)


def raw_session(address: str, worker_id: str, running_attempt_ids=()):
    """A bare Session opened with the generated stubs, standing in for a second process with the same worker id."""
    channel = grpc.insecure_channel(address)
    stub = runner_pb2_grpc.RunnerServiceStub(channel)
    hello = runner_pb2.SessionRequest(hello=runner_pb2.Hello(worker_id=worker_id, capacity=1, running_attempt_ids=list(running_attempt_ids)))
    gate = threading.Event()

    def requests():
        yield hello
        gate.wait()

    call = stub.Session(requests())
    first = next(call)
    assert first.WhichOneof("message") == "welcome", first

    def close():
        gate.set()
        call.cancel()
        channel.close()

    return first.welcome, close


def tally(runner):
    """Counts the session messages a Runner writes (upstream) and reads (downstream), by kind."""
    from collections import Counter

    upstream: Counter = Counter()
    downstream: Counter = Counter()
    write, on_response = runner._write, runner._on_response

    def counted_write(session, request):
        upstream.update([request.WhichOneof("message")])
        write(session, request)

    def counted_response(session, response):
        downstream.update([response.WhichOneof("message")])
        on_response(session, response)

    runner._write, runner._on_response = counted_write, counted_response
    return upstream, downstream
