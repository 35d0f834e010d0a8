"""Direct tests of the SDK's pure parts: values, durations, worker ids, back-off, replaced-session detection."""

from __future__ import annotations

import grpc
import pytest

from runnerline import Runner
from runnerline._session import is_replaced
from runnerline._values import from_value, parse_seconds, result_bound_violation, to_duration, to_value
from runnerline.runner import default_worker_id


@pytest.mark.parametrize("value", [None, True, 0, -7, 2.5, "x", [1, None, "y"], {"a": {"b": [1, 2.5]}}, {}])
def test_json_values_round_trip(value):
    assert from_value(to_value(value)) == value


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {1: "x"}, {"s": {1, 2}}, object()])
def test_what_json_cannot_hold_is_refused(value):
    with pytest.raises(ValueError, match="not a JSON value"):
        to_value(value)


def test_result_bounds_mirror_the_servers():
    assert result_bound_violation({"ok": 1}) is None
    assert "at most 65536 are accepted" in result_bound_violation("x" * 65536)
    deep: object = 1
    for _ in range(33):
        deep = [deep]
    assert result_bound_violation(deep) == "the result nests deeper than 32 levels"


@pytest.mark.parametrize("text, seconds", [(30, 30.0), (0.25, 0.25), ("30s", 30.0), ("250ms", 0.25), ("5m", 300.0), ("1h30m", 5400.0), ("2d", 172800.0)])
def test_durations_as_seconds_or_strings(text, seconds):
    assert parse_seconds(text) == seconds
    assert to_duration(text).ToNanoseconds() == round(seconds * 1e9)


@pytest.mark.parametrize("text", ["", "soon", "5 minutes", "-1", -1, True, "1.5.2s"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_seconds(text)


def test_worker_ids_and_capacity_are_checked_before_dialling():
    assert Runner(worker_id="gpu-host-7:0").worker_id == "gpu-host-7:0"
    for bad in ["has space", "x" * 129, ""]:
        with pytest.raises(ValueError, match="worker_id must be 1-128 characters"):
            Runner(worker_id=bad)
    for bad in [0, -1, 1.5, True]:
        with pytest.raises(ValueError, match="capacity must be a positive integer"):
            Runner(worker_id="w", capacity=bad)
    with pytest.raises(ValueError, match="labels must map strings to strings"):
        Runner(worker_id="w", labels={"gpus": 8})
    assert Runner().worker_id == default_worker_id()


def test_default_worker_id_is_the_host_name_made_valid(monkeypatch):
    monkeypatch.setattr("socket.gethostname", lambda: "gpu host#7.example")
    assert default_worker_id() == "gpu-host-7.example"


def test_back_off_doubles_up_to_the_maximum_with_jitter_in_the_upper_half():
    runner = Runner(worker_id="w", reconnect_initial_delay=0.1, reconnect_max_delay=1.0)
    for failures, ceiling in [(0, 0.1), (1, 0.2), (3, 0.8), (4, 1.0), (40, 1.0)]:
        delays = [runner._backoff(failures) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (failures, min(delays), max(delays))


def test_only_the_servers_replacement_status_counts_as_replaced():
    assert is_replaced(grpc.StatusCode.ABORTED, "replaced by a newer session (se-1) for worker w")
    assert is_replaced(grpc.StatusCode.ABORTED, "replaced by a newer session of worker w on another server")
    assert not is_replaced(grpc.StatusCode.ABORTED, "the transaction was aborted")
    assert not is_replaced(grpc.StatusCode.UNAVAILABLE, "replaced by a newer session")
