"""The host snapshot each heartbeat carries (runnerline.v1.SystemSnapshot): CPU, memory, disks, network
and NVIDIA GPUs. Every source is read on its own; one that fails or takes longer than its timeout leaves
its part empty and adds a CollectionError named after the source ("os", "cpu", "memory", "disks",
"network", "gpus"). Nothing is swallowed: a failure is reported, absence (no nvidia-smi, no NVML) is not.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

import psutil

from runnerline.v1 import telemetry_pb2

SOURCE_TIMEOUT_S = 2.0
NVIDIA_SMI_QUERY = "index,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw"
_MIB = 1024 * 1024
# Kernel and in-memory file systems say nothing about a runner's disk space.
_VIRTUAL_FILE_SYSTEMS = {"tmpfs", "devtmpfs", "ramfs", "squashfs", "proc", "sysfs", "cgroup", "cgroup2", "devfs", "overlay"}


class SnapshotCollector:
    """Collects snapshots of this host. collect() never raises. A source still running from an earlier
    call (a hung nvidia-smi) is joined, not started again, so it costs one stuck thread, not one per beat."""

    def __init__(self, sources: Optional[Dict[str, Callable[[], object]]] = None, timeout_s: float = SOURCE_TIMEOUT_S):
        self._network = _NetworkRates()
        self._sources: Dict[str, Callable[[], object]] = {
            "os": _read_os,
            "cpu": _read_cpu,
            "memory": _read_memory,
            "disks": _read_disks,
            "network": self._network.read,
            "gpus": read_gpus,
        }
        self._sources.update(sources or {})
        self._timeout_s = timeout_s
        self._in_flight: Dict[str, _Reading] = {}
        self._lock = threading.Lock()
        psutil.cpu_percent(interval=None)  # the first call only sets the baseline for the next

    def collect(self) -> telemetry_pb2.SystemSnapshot:
        readings = {name: self._start(name) for name in self._sources}
        deadline = time.monotonic() + self._timeout_s
        snapshot = telemetry_pb2.SystemSnapshot()
        for name, reading in readings.items():
            value, error = reading.result(max(0.0, deadline - time.monotonic()))
            if error is not None:
                snapshot.collection_errors.add(source=name, message=error)
                continue
            if name == "os":
                snapshot.hostname, snapshot.os = value
            elif name == "cpu":
                snapshot.cpu.CopyFrom(value)
            elif name == "memory":
                snapshot.memory.CopyFrom(value)
            elif name == "disks":
                disks, problems = value
                snapshot.disks.extend(disks)
                for problem in problems:
                    snapshot.collection_errors.add(source="disks", message=problem)
            elif name == "network":
                snapshot.network.CopyFrom(value)
            elif name == "gpus":
                snapshot.gpus.extend(value)
        snapshot.collect_time.GetCurrentTime()
        return snapshot

    def _start(self, name: str) -> "_Reading":
        with self._lock:
            reading = self._in_flight.get(name)
            if reading is None or reading.done.is_set():
                reading = _Reading(self._sources[name], self._timeout_s)
                self._in_flight[name] = reading
            return reading


class _Reading:
    """One source read on a daemon thread (a hung driver call must not keep the process alive)."""

    def __init__(self, read: Callable[[], object], timeout_s: float):
        self.done = threading.Event()
        self._value: object = None
        self._error: Optional[str] = None
        self._timeout_s = timeout_s
        threading.Thread(target=self._run, args=(read,), daemon=True, name="runnerline-snapshot").start()

    def _run(self, read: Callable[[], object]) -> None:
        try:
            self._value = read()
        except Exception as error:  # reported in the snapshot, never swallowed
            self._error = _describe(error)
        finally:
            self.done.set()

    def result(self, wait_s: float) -> Tuple[object, Optional[str]]:
        if not self.done.wait(wait_s):
            return None, f"timed out after {int(self._timeout_s * 1000)} ms"
        return self._value, self._error


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _read_os() -> Tuple[str, str]:
    distro = ""
    try:
        with open("/etc/os-release", encoding="utf-8") as release:
            fields = dict(line.rstrip("\n").split("=", 1) for line in release if "=" in line)
        name, version = fields.get("NAME", "").strip('"'), fields.get("VERSION_ID", "").strip('"')
        distro = " ".join(part for part in (name, version) if part)
    except FileNotFoundError:
        pass  # not Linux, or a minimal image: the kernel says enough
    system = f"{platform.system().lower()} {platform.release()}"
    return socket.gethostname(), f"{system} ({distro})" if distro else system


_cpu_model: Optional[str] = None


def _read_cpu_model() -> str:
    global _cpu_model
    if _cpu_model is None:
        model = ""
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
                for line in cpuinfo:
                    if line.startswith("model name"):
                        model = line.split(":", 1)[1].strip()
                        break
        except FileNotFoundError:
            model = platform.processor()
        _cpu_model = model
    return _cpu_model


def _read_cpu() -> telemetry_pb2.CpuStats:
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else []
    return telemetry_pb2.CpuStats(
        usage_percent=psutil.cpu_percent(interval=None),
        logical_cores=psutil.cpu_count() or 0,
        physical_cores=psutil.cpu_count(logical=False) or 0,
        load_average=load,
        model=_read_cpu_model(),
    )


def _read_memory() -> telemetry_pb2.MemoryStats:
    memory = psutil.virtual_memory()
    swap = psutil.swap_memory()
    return telemetry_pb2.MemoryStats(
        total_bytes=memory.total,
        # What processes hold, without caches: total minus available.
        used_bytes=max(0, memory.total - memory.available),
        available_bytes=memory.available,
        swap_total_bytes=swap.total,
        swap_used_bytes=swap.used,
    )


def _read_disks() -> Tuple[List[telemetry_pb2.DiskStats], List[str]]:
    """Disks, and one problem per mount that could not be read (the others still count)."""
    disks: List[telemetry_pb2.DiskStats] = []
    problems: List[str] = []
    seen = set()
    for partition in psutil.disk_partitions(all=False):
        if partition.fstype in _VIRTUAL_FILE_SYSTEMS or partition.mountpoint in seen:
            continue
        seen.add(partition.mountpoint)
        try:
            usage = psutil.disk_usage(partition.mountpoint)
        except OSError as error:
            problems.append(f"{partition.mountpoint}: {_describe(error)}")
            continue
        if usage.total > 0:
            disks.append(telemetry_pb2.DiskStats(mount=partition.mountpoint, total_bytes=usage.total, used_bytes=usage.used))
    return disks, problems


class _NetworkRates:
    """Bytes per second over the non-loopback interfaces since the previous reading (0 on the first)."""

    def __init__(self) -> None:
        self._previous: Optional[Tuple[float, int, int]] = None

    def read(self) -> telemetry_pb2.NetworkStats:
        loopback = {name for name, stats in psutil.net_if_stats().items() if "loopback" in getattr(stats, "flags", "").split(",") or name == "lo"}
        counters = psutil.net_io_counters(pernic=True)
        rx = sum(c.bytes_recv for name, c in counters.items() if name not in loopback)
        tx = sum(c.bytes_sent for name, c in counters.items() if name not in loopback)
        now = time.monotonic()
        previous, self._previous = self._previous, (now, rx, tx)
        if previous is None or now <= previous[0]:
            return telemetry_pb2.NetworkStats()
        elapsed = now - previous[0]
        return telemetry_pb2.NetworkStats(
            rx_bytes_per_second=max(0, rx - previous[1]) / elapsed, tx_bytes_per_second=max(0, tx - previous[2]) / elapsed
        )


def read_gpus() -> List[telemetry_pb2.GpuStats]:
    """NVIDIA GPUs through NVML (the pynvml module) when it is installed, else nvidia-smi. No NVML module and
    no nvidia-smi on the PATH means no NVIDIA GPUs: an empty list. Either one present but failing raises."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return _read_gpus_nvidia_smi()
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no NVML library or driver: nvidia-smi says whether that is a failure
        return _read_gpus_nvidia_smi()
    return _read_gpus_nvml(pynvml)


def _read_gpus_nvml(nvml) -> List[telemetry_pb2.GpuStats]:
    try:
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                telemetry_pb2.GpuStats(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else name,
                    utilization_percent=nvml.nvmlDeviceGetUtilizationRates(handle).gpu,
                    memory_used_bytes=memory.used,
                    memory_total_bytes=memory.total,
                    temperature_celsius=nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
                    power_watts=nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
                )
            )
        return gpus
    finally:
        nvml.nvmlShutdown()


def _read_gpus_nvidia_smi() -> List[telemetry_pb2.GpuStats]:
    try:
        done = subprocess.run(
            ["nvidia-smi", f"--query-gpu={NVIDIA_SMI_QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=SOURCE_TIMEOUT_S,
        )
    except FileNotFoundError:
        return []
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"nvidia-smi killed after {int(SOURCE_TIMEOUT_S * 1000)} ms") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        raise RuntimeError(f"nvidia-smi failed (exit {done.returncode})" + (f": {detail}" if detail else ""))
    return parse_nvidia_smi_csv(done.stdout)


def parse_nvidia_smi_csv(text: str) -> List[telemetry_pb2.GpuStats]:
    """Parses `nvidia-smi --query-gpu=<NVIDIA_SMI_QUERY> --format=csv,noheader,nounits`."""
    gpus: List[telemetry_pb2.GpuStats] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 7:
            raise ValueError(f"unexpected nvidia-smi line: {line!r}")
        # GPU names may contain commas; the numeric fields around the name never do.
        index_field, rest = fields[0], fields[1:]
        name = ", ".join(rest[:-5])
        utilization, used, total, temperature, power = (_nvidia_number(field) for field in rest[-5:])
        index = int(index_field) if index_field.isdigit() else len(gpus)
        gpus.append(
            telemetry_pb2.GpuStats(
                index=index,
                name=name,
                utilization_percent=utilization,
                memory_used_bytes=int(round(used * _MIB)),
                memory_total_bytes=int(round(total * _MIB)),
                temperature_celsius=temperature,
                power_watts=power,
            )
        )
    return gpus


def _nvidia_number(field: str) -> float:
    """"[N/A]" and "[Not Supported]" are how nvidia-smi says a sensor is absent: 0."""
    try:
        value = float(field)
    except ValueError:
        return 0.0
    return value if value == value and value not in (float("inf"), float("-inf")) and value >= 0 else 0.0
