"""The runner's one heartbeat loop, across sessions: a beat at the interval the server asked for (jittered
by 10%), or at once when asked, carrying a host snapshot, custom numbers and the attempts held."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Callable, List, Optional

from runnerline._values import to_struct
from runnerline.snapshot import SnapshotCollector
from runnerline.v1 import runner_pb2, telemetry_pb2

DEFAULT_INTERVAL_S = 5.0
#: The longest a beat waits for its snapshot; a later snapshot goes out with the next beat.
MAX_SNAPSHOT_WAIT_S = 3.0

#: Where a beat goes now: a function that writes it on the current session, or None while not welcomed.
BeatTarget = Callable[[], Optional[Callable[[runner_pb2.Heartbeat], None]]]


class Heartbeats:
    def __init__(
        self,
        collect_snapshot: Optional[Callable[[], telemetry_pb2.SystemSnapshot]],
        extra_stats: Optional[Callable[[], Optional[dict]]],
        log: logging.Logger,
        worker_id: str,
    ):
        self.interval_s = DEFAULT_INTERVAL_S
        #: The sequence the next beat carries; a HeartbeatAck with at least a sequence confirms what was sent before it.
        self.next_sequence = 1
        self._collect_snapshot = collect_snapshot
        self._extra_stats = extra_stats
        self._log = log
        self._worker_id = worker_id
        self._soon = asyncio.Event()
        self._urgent = False
        self._reading: Optional["asyncio.Future[telemetry_pb2.SystemSnapshot]"] = None
        self._fresh: Optional[telemetry_pb2.SystemSnapshot] = None

    def request(self, urgent: bool = False) -> None:
        """A beat right away: after Welcome, or, urgent, when stopping, so that its ack confirms the last
        results at once (an urgent beat does not wait for a snapshot still being collected)."""
        self._urgent = self._urgent or urgent
        self._soon.set()

    async def run(self, stopped: Callable[[], bool], target: BeatTarget, held: Callable[[], List[str]]) -> None:
        """Beats never overlap, and a slow snapshot delays only its own beat."""
        while not stopped():
            try:
                await asyncio.wait_for(self._soon.wait(), self.interval_s * (0.9 + 0.2 * random.random()))
            except asyncio.TimeoutError:
                pass
            self._soon.clear()
            urgent, self._urgent = self._urgent, False
            if target() is None:
                continue
            snapshot = await self._take_snapshot(0.0 if urgent else min(self.interval_s / 2, MAX_SNAPSHOT_WAIT_S))
            send = target()
            if stopped() or send is None:
                continue
            beat = runner_pb2.Heartbeat(attempt_ids=held(), sequence=self.next_sequence)
            self.next_sequence += 1
            if snapshot is not None:
                beat.snapshot.CopyFrom(snapshot)  # unset keeps the server's previous snapshot
            extra = self._read_extra_stats()
            if extra is not None:
                beat.extra_stats.CopyFrom(extra)
            send(beat)

    async def _take_snapshot(self, wait_s: float) -> Optional[telemetry_pb2.SystemSnapshot]:
        """Waits up to wait_s for a snapshot; one still being collected for an earlier beat is awaited,
        never started twice."""
        if self._reading is None:
            if self._collect_snapshot is None:
                self._collect_snapshot = SnapshotCollector().collect
            reading = asyncio.get_running_loop().run_in_executor(None, self._collect_snapshot)
            self._reading = reading
            reading.add_done_callback(self._collected)
        try:
            await asyncio.wait_for(asyncio.shield(self._reading), wait_s)
        except asyncio.TimeoutError:
            pass
        except Exception:  # noqa: BLE001 - logged by _collected
            pass
        await asyncio.sleep(0)  # lets _collected run
        snapshot, self._fresh = self._fresh, None
        return snapshot

    def _collected(self, future: "asyncio.Future[telemetry_pb2.SystemSnapshot]") -> None:
        self._reading = None
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self._log.warning("runner %s: snapshot collection failed: %s", self._worker_id, error)
        else:
            self._fresh = future.result()

    def _read_extra_stats(self):
        if self._extra_stats is None:
            return None
        try:
            return to_struct(self._extra_stats())
        except Exception as error:  # noqa: BLE001 - a broken callback must not stop the heartbeats
            self._log.warning("runner %s: extra_stats failed: %s", self._worker_id, error)
            return None
