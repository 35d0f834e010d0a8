"""One assigned attempt as a handler sees it, and how its handler runs."""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any, Callable, Optional

from runnerline._values import JsonValue, from_value
from runnerline.v1 import attempt_pb2, rollout_pb2


class Job:
    """One attempt the server assigned to this runner.

    The handler's return value is the attempt's result (any JSON value; None is a result too, return
    `Job.NO_RESULT` for none); an exception reports FAILED with its message. When the server cancels the
    attempt, or the runner is stopped without draining, `cancelled` is set and `cancel_reason` says why;
    an async handler's task is also cancelled (asyncio.CancelledError inside it). A sync handler runs on
    its own thread and should check `job.cancelled` (or wait on it) to stop early.
    """

    #: Returned by a handler: SUCCEEDED without a result (Attempt.result stays unset).
    NO_RESULT: Any = object()

    def __init__(self, rollout: rollout_pb2.Rollout, attempt: attempt_pb2.Attempt, report: Callable[[Optional[dict]], None]):
        #: The rollout's input as a plain value (None when enqueued without one).
        self.input: JsonValue = from_value(rollout.input) if rollout.HasField("input") else None
        #: The rollout as the server sent it (config, metadata, ids): runnerline.v1.Rollout.
        self.rollout = rollout
        #: The attempt created for this runner: runnerline.v1.Attempt.
        self.attempt = attempt
        #: Set when the attempt was cancelled or the runner stopped; see cancel_reason.
        self.cancelled = threading.Event()
        #: Why the job was cancelled, e.g. "rollout cancelled" or "the runner was stopped"; None until then.
        self.cancel_reason: Optional[str] = None
        self._report = report

    @property
    def attempt_id(self) -> str:
        return self.attempt.attempt_id

    @property
    def rollout_id(self) -> str:
        return self.rollout.rollout_id

    def report_running(self, metadata: Optional[dict] = None) -> None:
        """A sign of life; `metadata` (optional, a dict) is merged into the attempt's metadata. Safe from any thread."""
        self._report(metadata)

    def __repr__(self) -> str:
        return f"Job(rollout_id={self.rollout_id!r}, attempt_id={self.attempt_id!r})"


def is_async_handler(handler: Callable[..., Any]) -> bool:
    call = getattr(handler, "__call__", None)
    return inspect.iscoroutinefunction(handler) or (call is not None and inspect.iscoroutinefunction(call))


async def call_handler(handler: Callable[[Job], Any], job: Job) -> Any:
    """Awaits an async handler in the loop; runs a sync one on a daemon thread of its own, so that a handler
    that ignores a cancel never keeps the process from exiting after the runner stopped."""
    if is_async_handler(handler):
        return await handler(job)
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def settle(value: Any, error: Optional[BaseException]) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def target() -> None:
        try:
            value, error = handler(job), None
        except BaseException as raised:  # handed to the loop, which reports it as FAILED
            value, error = None, raised
        try:
            loop.call_soon_threadsafe(settle, value, error)
        except RuntimeError:
            pass  # the loop closed meanwhile: the runner stopped and no longer waits for this job

    threading.Thread(target=target, daemon=True, name=f"runnerline-job-{job.attempt_id}").start()
    result = await future
    if inspect.isawaitable(result):  # e.g. a lambda returning a coroutine
        result = await result
    return result
