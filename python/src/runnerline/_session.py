"""A runner's session with the server, as the Runner keeps it: the stream's state, the attempts held,
the results awaiting acknowledgement, and the one task that writes requests in order."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Optional, Set

import grpc

from runnerline._values import timestamp_now
from runnerline.job import Job
from runnerline.v1 import attempt_pb2, runner_pb2

#: Hello refusals that a reconnect would only repeat.
PERMANENT_HELLO_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
FINAL_STATUSES = (attempt_pb2.ATTEMPT_STATUS_SUCCEEDED, attempt_pb2.ATTEMPT_STATUS_FAILED)


def is_replaced(code: grpc.StatusCode, details: str) -> bool:
    """The server ends a session with ABORTED "replaced by a newer session ..." when the same worker id
    opened another one."""
    return code == grpc.StatusCode.ABORTED and "replaced by a newer session" in details


@dataclass
class Session:
    call: Any
    outgoing: "asyncio.Queue[Optional[runner_pb2.SessionRequest]]"
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    welcomed: bool = False
    id: str = ""
    draining: bool = False  # the server sent Drain
    closing: bool = False  # we half-closed the request side
    terminal_update_returns_credit: bool = False
    # Attempts whose SUCCEEDED/FAILED update returns their credit on this session (docs/protocol.md, credits).
    credit_returning: Set[str] = field(default_factory=set)
    # The server's SessionReplaced, when a newer session of the same worker id took over (another process).
    replaced_by: Optional[Any] = None


@dataclass
class Held:
    job: Job
    task: Optional["asyncio.Task[None]"] = None
    cancelled: bool = False  # the server cancelled it: it reports nothing
    finished: bool = False


@dataclass
class Sent:
    update: runner_pb2.AttemptUpdate
    confirmed_by_sequence: int  # acknowledged once a HeartbeatAck with at least this sequence arrives


async def write_requests(call: Any, outgoing: "asyncio.Queue[Optional[runner_pb2.SessionRequest]]") -> None:
    """The session's one writer: requests in order, then a half-close (None) ends the request side."""
    try:
        while True:
            request = await outgoing.get()
            if request is None:
                await call.done_writing()
                return
            await call.write(request)
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
        pass  # the call ended; its reader reports how


def attempt_update(attempt_id: str, status: int, error_message: str = "", metadata=None) -> runner_pb2.AttemptUpdate:
    update = runner_pb2.AttemptUpdate(attempt_id=attempt_id, status=status, error_message=error_message)
    if metadata is not None:
        update.metadata.CopyFrom(metadata)
    if status in FINAL_STATUSES:
        # An outcome carries when it happened: it may reach the server late, resent after a reconnect.
        update.finish_time.CopyFrom(timestamp_now())
    return update


def code_name(code: int) -> str:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return str(code)
