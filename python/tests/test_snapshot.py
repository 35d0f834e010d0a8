"""The host snapshot: real values on this host, nvidia-smi parsed and its failures reported, a failing or
hanging source reported in collection_errors instead of failing the heartbeat."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time

import psutil
import pytest

from runnerline.snapshot import SnapshotCollector, parse_nvidia_smi_csv, read_gpus


def test_every_source_has_plausible_values_on_this_host(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")  # an nvidia-smi here, if any, is not ours to judge
    snapshot = SnapshotCollector().collect()
    assert [e.source for e in snapshot.collection_errors if e.source != "gpus"] == []
    assert snapshot.hostname == socket.gethostname()
    assert snapshot.os.startswith("linux ")
    assert abs(snapshot.collect_time.ToSeconds() - time.time()) < 5
    assert snapshot.cpu.logical_cores == psutil.cpu_count()
    assert 1 <= snapshot.cpu.physical_cores <= snapshot.cpu.logical_cores
    assert 0 <= snapshot.cpu.usage_percent <= 100
    assert len(snapshot.cpu.load_average) == 3 and snapshot.cpu.model
    assert snapshot.memory.total_bytes == psutil.virtual_memory().total
    assert 0 < snapshot.memory.used_bytes <= snapshot.memory.total_bytes
    assert snapshot.disks and all(d.mount.startswith("/") and d.used_bytes <= d.total_bytes for d in snapshot.disks)
    assert snapshot.network.rx_bytes_per_second >= 0 and snapshot.network.tx_bytes_per_second >= 0


def fake_nvidia_smi(directory, script: str) -> None:
    path = directory / "nvidia-smi"
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_gpus_come_from_nvidia_smi(monkeypatch, tmp_path):
    fake_nvidia_smi(tmp_path, "echo '0, NVIDIA H100 80GB HBM3, 87, 40960, 81559, 61, 312.5'; echo '1, Tesla, V100, [N/A], 10, 16384, [Not Supported], 40'")
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    gpus = read_gpus()
    assert [(g.index, g.name, g.utilization_percent, g.memory_used_bytes, g.power_watts) for g in gpus] == [
        (0, "NVIDIA H100 80GB HBM3", 87, 40960 * 1024 * 1024, 312.5),
        (1, "Tesla, V100", 0, 10 * 1024 * 1024, 40),
    ]


def test_no_nvidia_smi_is_no_gpus_and_no_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert read_gpus() == []


def test_a_failing_nvidia_smi_is_reported_not_swallowed(monkeypatch, tmp_path):
    fake_nvidia_smi(tmp_path, "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver' >&2; exit 9")
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    snapshot = SnapshotCollector().collect()
    assert list(snapshot.gpus) == []
    (error,) = [e for e in snapshot.collection_errors if e.source == "gpus"]
    assert error.message == "nvidia-smi failed (exit 9): NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver"
    assert snapshot.cpu.logical_cores > 0  # the other sources are unaffected


def test_unparseable_nvidia_smi_output_raises():
    with pytest.raises(ValueError, match="unexpected nvidia-smi line"):
        parse_nvidia_smi_csv("garbage\n")


def test_a_failing_or_hanging_source_is_reported_and_joined_not_restarted():
    release = threading.Event()
    calls = {"memory": 0}

    def hanging_memory():
        calls["memory"] += 1
        release.wait(10)
        raise RuntimeError("never")

    def broken_cpu():
        raise PermissionError("/proc/stat: permission denied")

    collector = SnapshotCollector(sources={"memory": hanging_memory, "cpu": broken_cpu}, timeout_s=0.2)
    first = collector.collect()
    second = collector.collect()
    release.set()
    errors = {e.source: e.message for e in first.collection_errors}
    assert errors == {"memory": "timed out after 200 ms", "cpu": "/proc/stat: permission denied", **({"gpus": errors["gpus"]} if "gpus" in errors else {})}
    assert not first.HasField("memory") and not first.HasField("cpu")
    assert first.hostname and first.disks
    assert {e.source for e in second.collection_errors} >= {"memory", "cpu"}
    assert calls["memory"] == 1  # the second snapshot joined the stuck reading instead of starting another
