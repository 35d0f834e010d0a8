"""The Python flow end to end against a real server: a Runner takes rollouts a Client enqueued."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from google.protobuf import json_format

from conftest import eventually, tally, unique
from runnerline import Client, ClientError, Job, Runner
from runnerline.v1 import attempt_pb2, attempt_pb2_grpc, worker_pb2


def test_runner_and_training_loop(server, stubs, background):
    """Hello with labels and capacity; heartbeats with a real host snapshot; results as plain values."""
    worker_id = unique("py-flow")
    runner = Runner(server.address, worker_id=worker_id, capacity=2, labels={"pool": "py"}, extra_stats=lambda: {"queue_depth": 3})
    seen_threads = set()

    def handler(job: Job):
        seen_threads.add(threading.current_thread().name)
        job.report_running({"model": "adder-v1"})
        return {"answer": sum(job.input["terms"]), "echo": job.input}

    background(runner, handler)
    with Client(server.address) as client:
        inputs = [{"terms": [i, i + 1, 0.5], "tags": ["x", None, True]} for i in range(6)]
        rollouts = client.enqueue_many(inputs, config={"max_attempts": 2, "retry_on": ["FAILED"], "timeout": "1m"})
        assert [r["status"] for r in rollouts] == ["QUEUING"] * 6
        assert rollouts[0]["config"]["retry_on"] == ["FAILED"]
        results = {r["rollout_id"]: r for r in client.wait(rollouts, timeout=30)}
        assert set(results) == {r["rollout_id"] for r in rollouts}
        for rollout, sent in zip(rollouts, inputs):
            done = results[rollout["rollout_id"]]
            assert done["status"] == "SUCCEEDED"
            assert done["result"] == {"answer": 2 * sent["terms"][0] + 1.5, "echo": sent}
            assert done["input"] == sent
        one = client.get(rollouts[0]["rollout_id"])
        assert one["latest_attempt_id"]
        assert [r["rollout_id"] for r in client.list(rollout_id_contains=rollouts[0]["rollout_id"])] == [rollouts[0]["rollout_id"]]
    assert all(name.startswith("runnerline-job-") for name in seen_threads)
    attempts = attempt_pb2_grpc.AttemptServiceStub(stubs.channel)
    attempt = attempts.GetAttempt(attempt_pb2.GetAttemptRequest(attempt_id=one["latest_attempt_id"]), timeout=10).attempt
    assert json_format.MessageToDict(attempt.metadata) == {"model": "adder-v1"}  # report_running's metadata, not the result

    worker = eventually(lambda: stubs.worker(worker_id), lambda w: w.snapshot.hostname != "", "no snapshot reached the worker")
    assert worker.connected
    assert dict(worker.labels) == {"pool": "py"}
    assert worker.capacity == 2
    assert worker.client_version.startswith("runnerline-python/")
    assert worker.snapshot.cpu.logical_cores > 0 and worker.snapshot.memory.total_bytes > 0
    assert len(worker.snapshot.disks) > 0
    assert worker.extra_stats["queue_depth"] == 3
    assert worker.status == worker_pb2.WORKER_STATUS_IDLE


def test_async_handler_failure_null_and_oversized_results(server, background):
    runner = Runner(server.address, worker_id=unique("py-async"), capacity=3)

    async def handler(job: Job):
        await asyncio.sleep(0.01)
        kind = job.input["kind"]
        if kind == "boom":
            raise RuntimeError("the agent crashed")
        if kind == "null":
            return None
        if kind == "none":
            return Job.NO_RESULT
        if kind == "nan":
            return {"reward": float("nan")}
        if kind == "large":
            return "x" * (64 * 1024)
        return {"ok": kind}

    background(runner, handler)
    with Client(server.address) as client:
        kinds = ["boom", "null", "none", "nan", "large", "fine"]
        rollouts = client.enqueue_many([{"kind": k} for k in kinds])
        done = {r["rollout_id"]: r for r in client.wait(rollouts, timeout=30)}
        by_kind = {kind: done[r["rollout_id"]] for kind, r in zip(kinds, rollouts)}
    assert by_kind["boom"]["status"] == "FAILED"
    assert "the agent crashed" in by_kind["boom"]["failure_reason"]
    assert by_kind["null"]["status"] == "SUCCEEDED" and "result" in by_kind["null"] and by_kind["null"]["result"] is None
    assert by_kind["none"]["status"] == "SUCCEEDED" and "result" not in by_kind["none"]
    assert by_kind["nan"]["status"] == "FAILED" and "not JSON" in by_kind["nan"]["failure_reason"]
    assert by_kind["large"]["status"] == "FAILED" and "at most 65536 are accepted" in by_kind["large"]["failure_reason"]
    assert by_kind["fine"]["result"] == {"ok": "fine"}


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_cancel_reaches_the_handler_and_frees_the_slot(server, background, kind):
    runner = Runner(server.address, worker_id=unique(f"py-cancel-{kind}"))
    upstream, _ = tally(runner)
    started = threading.Event()
    outcome = {}

    def sync_handler(job: Job):
        if job.input.get("doomed"):
            started.set()
            outcome["cancelled"] = job.cancelled.wait(20)
            outcome["reason"] = job.cancel_reason
            return "ignored"
        return "next"

    async def async_handler(job: Job):
        if job.input.get("doomed"):
            started.set()
            try:
                await asyncio.sleep(20)
            except asyncio.CancelledError:
                outcome["cancelled"] = True
                outcome["reason"] = job.cancel_reason
                raise
        return "next"

    background(runner, sync_handler if kind == "sync" else async_handler)
    with Client(server.address) as client:
        doomed = client.enqueue({"doomed": True})
        assert started.wait(20)
        cancelled = client.cancel(doomed)
        assert cancelled["status"] == "CANCELLED"
        eventually(lambda: outcome.get("cancelled"), bool, "the handler never saw the cancel")
        assert outcome["reason"]
        # The slot is granted again: the next rollout arrives and succeeds on the runner's one slot.
        follow = client.enqueue({"doomed": False})
        (done,) = list(client.wait([follow], timeout=20))
        assert done["status"] == "SUCCEEDED" and done["result"] == "next"
        # Ready{1} after Welcome, and Ready{1} for the cancelled job's slot, which reports nothing;
        # the follow-up's result returned its own credit.
        assert upstream["ready"] == 2
        with pytest.raises(ClientError) as error:
            client.cancel(follow)
        assert error.value.code.name == "FAILED_PRECONDITION"


def test_client_errors_and_plain_values(server):
    with Client(server.address) as client:
        with pytest.raises(ClientError) as error:
            client.get("ro-does-not-exist")
        assert error.value.code.name == "NOT_FOUND"
        with pytest.raises(ValueError, match="a duration"):
            client.enqueue({}, config={"timeout": "soon"})
        with pytest.raises(ValueError, match="unknown config field"):
            client.enqueue({}, config={"colour": "red"})
        with pytest.raises(ValueError, match="not a JSON value"):
            client.enqueue({"x": float("inf")})
        first = client.enqueue({"q": 1}, rollout_id=unique("idem"), mode="train", priority=5)
        again = client.enqueue({"q": 1}, rollout_id=first["rollout_id"], mode="train", priority=5)
        assert again["rollout_id"] == first["rollout_id"] and first["mode"] == "TRAIN" and first["priority"] == 5
        with pytest.raises(TimeoutError, match=first["rollout_id"]):
            list(client.wait([first], timeout=0.3))
        client.cancel(first)
