"""The runner: one long-lived RunnerService.Session stream, kept across disconnects, that takes attempts
and runs a handler for each. The session protocol it speaks is written down in docs/protocol.md.

One concern, the runner's side of the session, in one class (as src/client/runner.ts): its parts share the held
attempts, the unconfirmed results and the current session. The heartbeat loop (_heartbeats.py), the session's
records (_session.py), the host snapshot (snapshot.py) and running a handler (job.py) live apart."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import signal
import socket
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import grpc

from runnerline import _security
from runnerline._heartbeats import Heartbeats
from runnerline._session import (
    FINAL_STATUSES,
    PERMANENT_HELLO_CODES,
    Held,
    Sent,
    Session,
    attempt_update,
    code_name,
    is_replaced,
    write_requests,
)
from runnerline._values import result_bound_violation, to_struct, to_value
from runnerline._version import __version__
from runnerline.errors import RunnerRefusedError, SessionReplacedError
from runnerline.job import Job, call_handler
from runnerline.v1 import attempt_pb2, runner_pb2, runner_pb2_grpc, telemetry_pb2

__all__ = ["Runner", "WORKER_ID_RULE", "STOPPED_REASON"]

WORKER_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
WORKER_ID_RULE = "1-128 characters of letters, digits, '.', '_', ':' and '-'"
#: The error_message of the attempts an abort (stop without drain) reports FAILED.
STOPPED_REASON = "the runner was stopped"
_CLOSE_GRACE_S = 5.0
_ABORT_GRACE_S = 2.0
_log = logging.getLogger("runnerline")


def default_worker_id() -> str:
    """This host's name, with any character a worker id may not hold replaced by '-'."""
    name = re.sub(r"[^A-Za-z0-9._:-]", "-", socket.gethostname())[:128]
    return name or "runner"


class Runner:
    """Takes attempts from a Runnerline server and runs `handler(job)` for each, up to `capacity` at once.

    Sends Hello with labels and capacity, heartbeats with a host snapshot at the interval the server asks
    for (listing the attempts held), grants credits as slots free up, reconnects with jittered back-off
    and resumes held attempts, keeps results until the server acknowledged them. run() drains on the first
    SIGINT/SIGTERM and aborts on the second. Raises RunnerRefusedError when the server refuses Hello for
    good, SessionReplacedError when another runner took this worker id.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        worker_id: Optional[str] = None,
        labels: Optional[Dict[str, str]] = None,
        capacity: int = 1,
        client_version: Optional[str] = None,
        token: Optional[str] = None,
        tls: bool = False,
        tls_ca: _security.PemSource = None,
        tls_cert: _security.PemSource = None,
        tls_key: _security.PemSource = None,
        reconnect_initial_delay: float = 0.1,
        reconnect_max_delay: float = 10.0,
        welcome_timeout: float = 10.0,
        collect_snapshot: Optional[Callable[[], telemetry_pb2.SystemSnapshot]] = None,
        extra_stats: Optional[Callable[[], Optional[dict]]] = None,
        channel_options: Sequence[Tuple[str, Any]] = (),
        logger: Optional[logging.Logger] = None,
    ):
        worker_id = default_worker_id() if worker_id is None else worker_id
        if not isinstance(worker_id, str) or not WORKER_ID_PATTERN.match(worker_id):
            raise ValueError(f"worker_id must be {WORKER_ID_RULE}, got {worker_id!r}")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        if not all(isinstance(key, str) and isinstance(value, str) for key, value in (labels or {}).items()):
            raise ValueError(f"labels must map strings to strings, got {labels!r}")
        self.address = address
        self.worker_id = worker_id
        self.labels = dict(labels or {})
        self.capacity = capacity
        self.client_version = client_version if client_version is not None else f"runnerline-python/{__version__}"
        self._token = token
        self._credentials = _security.channel_credentials(tls, tls_ca, tls_cert, tls_key)
        self._initial_delay = reconnect_initial_delay
        self._max_delay = max(reconnect_max_delay, reconnect_initial_delay)
        self._welcome_timeout = welcome_timeout
        self._collect_snapshot = collect_snapshot
        self._extra_stats = extra_stats
        self._beats: Optional[Heartbeats] = None
        self._channel_options = _security.channel_options(channel_options, self._initial_delay, self._max_delay)
        self._log = logger or _log

        self._state = "new"  # new | running | draining | stopped
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._handler: Optional[Callable[[Job], Any]] = None
        self._session: Optional[Session] = None
        self._held: Dict[str, Held] = {}
        self._unsent: List[runner_pb2.AttemptUpdate] = []
        self._unconfirmed: List[Sent] = []
        self._last_ack: Optional[int] = None
        self._waiters: List[Tuple[Callable[[], bool], asyncio.Future]] = []
        self._error: Optional[Exception] = None
        self._goodbye_sent = False
        self._listeners: List[Callable[[str, Any], None]] = []

    # -- public API -------------------------------------------------------------------------------------

    @property
    def status(self) -> Dict[str, Any]:
        """state ("new", "running", "draining", "stopped"), connected, session_id, last_ack_sequence, held_attempt_ids."""
        session = self._session
        welcomed = bool(session and session.welcomed)
        return {
            "state": self._state,
            "connected": welcomed,
            "session_id": session.id if welcomed and session else None,
            "last_ack_sequence": self._last_ack,
            "held_attempt_ids": list(self._held),
        }

    def add_listener(self, listener: Callable[[str, Any], None]) -> None:
        """Calls listener(event, value) on the runner's event loop: "connected" (Welcome), "disconnected"
        (grpc.aio.AioRpcError or None), "heartbeat_ack", "assignment" (Job), "cancelled" (Job), "rejected"
        (Rejected), "drain" (Drain). A listener must not block."""
        self._listeners.append(listener)

    def run(self, handler: Callable[[Job], Any], *, handle_signals: bool = True) -> None:
        """Blocks until the runner stops: a signal (when handle_signals), stop(), or a refusal for good.
        A server's Drain is not a stop: the runner reconnects to the restarted server. See run_async."""
        asyncio.run(self.run_async(handler, handle_signals=handle_signals))

    async def run_async(self, handler: Callable[[Job], Any], *, handle_signals: bool = False) -> None:
        """Runs `handler` for every assignment until the runner stops, then returns once every handler
        has returned (or was abandoned by an abort). With handle_signals (main thread only), the first
        SIGINT/SIGTERM drains and the second aborts."""
        if self._state == "stopped":
            return  # stopped before it ran
        if self._state != "new":
            raise RuntimeError("a Runner runs once; create another")
        self._loop = asyncio.get_running_loop()
        self._handler = handler
        self._beats = Heartbeats(self._collect_snapshot, self._extra_stats, self._log, self.worker_id)
        self._state = "running"
        installed = self._install_signals() if handle_signals else []
        address = self.address
        if self._credentials is None:
            channel = grpc.aio.insecure_channel(address, options=self._channel_options)
        else:
            channel = grpc.aio.secure_channel(address, self._credentials, options=self._channel_options)
        self._stub = runner_pb2_grpc.RunnerServiceStub(channel)
        beats = asyncio.ensure_future(self._beats.run(lambda: self._state == "stopped", self._beat_target, lambda: list(self._held)))
        try:
            await self._maintain_session()
        finally:
            self._state = "stopped"
            self._notify()
            tasks = [held.task for held in self._held.values() if held.task is not None]
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            beats.cancel()
            await asyncio.gather(beats, return_exceptions=True)
            for signum in installed:
                self._loop.remove_signal_handler(signum)
            await channel.close()
        if self._error is not None:
            raise self._error

    def stop(self, drain: bool = False) -> None:
        """Asks the runner to stop, from any thread (a handler included); returns at once.
        drain=True: Goodbye, no new work, held attempts finish and their results are acknowledged, then the
        stream closes. drain=False: held attempts are cancelled and reported FAILED ("the runner was
        stopped"), Goodbye, and the stream closes within about 2 s."""
        loop = self._loop
        if loop is None:
            self._state = "stopped"
            return
        if self._state == "stopped" or loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self.stop_async(drain=drain), loop)
        except RuntimeError:
            pass  # the loop closed meanwhile: the runner has stopped

    async def stop_async(self, drain: bool = False) -> None:
        """stop() on the runner's own loop; returns once stopped."""
        if self._state == "new":
            self._state = "stopped"
            return
        if self._state == "stopped":
            return
        if drain:
            if self._state == "running":
                self._state = "draining"
                self._log.info("runner %s: draining (no new work; held attempts finish)", self.worker_id)
                self._say_goodbye("runner stopping")
            await self._wait_until(lambda: not self._held or self._state == "stopped")
            self._request_beat(urgent=True)  # its ack confirms the last results without waiting a whole interval
            await self._wait_until(lambda: (not self._unsent and not self._unconfirmed) or self._state == "stopped")
            if self._state != "stopped":
                await self._close(graceful=True)
            return
        await self._abort()

    # -- stopping ---------------------------------------------------------------------------------------

    async def _abort(self) -> None:
        """Held attempts end FAILED ("the runner was stopped"), Goodbye, and the stream closes within ~2 s."""
        self._log.info("runner %s: stopping; abandoning %d held attempt(s)", self.worker_id, len(self._held))
        if self._state == "running":
            self._state = "draining"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _ABORT_GRACE_S
        for held in list(self._held.values()):
            self._cancel_job(held, STOPPED_REASON)
            self._finish(held, attempt_update(held.job.attempt_id, attempt_pb2.ATTEMPT_STATUS_FAILED, STOPPED_REASON))
        self._say_goodbye(STOPPED_REASON)
        self._request_beat(urgent=True)
        session = self._session
        if session is not None and session.welcomed:
            await self._wait_until(lambda: not self._unconfirmed and not self._unsent, timeout=deadline - loop.time())
        if self._state != "stopped":
            await self._close(graceful=True, grace_s=max(0.0, deadline - loop.time()))

    async def _close(self, graceful: bool, grace_s: float = _CLOSE_GRACE_S) -> None:
        self._state = "stopped"
        for held in list(self._held.values()):
            self._cancel_job(held, STOPPED_REASON)
        session = self._session
        self._notify()
        if session is None:
            return
        if graceful:
            self._half_close(session)
            try:
                await asyncio.wait_for(session.ended.wait(), grace_s)
                return
            except asyncio.TimeoutError:
                pass
        session.call.cancel()

    def _say_goodbye(self, reason: str) -> None:
        session = self._session
        if session is not None and session.welcomed and not self._goodbye_sent:
            self._goodbye_sent = True
            self._write(session, runner_pb2.SessionRequest(goodbye=runner_pb2.Goodbye(reason=reason)))

    def _stop_for_good(self, error: Exception) -> None:
        """Refused or replaced: no reconnect; handlers are told, nothing is reported (it would be refused)."""
        self._log.error("runner %s: %s; not reconnecting", self.worker_id, error)
        self._error = error
        self._state = "stopped"
        for held in list(self._held.values()):
            self._cancel_job(held, str(error))
        self._notify()

    def _install_signals(self) -> List[int]:
        if threading.current_thread() is not threading.main_thread():
            self._log.debug("runner %s: not on the main thread; signals are not handled", self.worker_id)
            return []
        loop = asyncio.get_running_loop()
        received = {"count": 0}

        def on_signal(signum: int) -> None:
            received["count"] += 1
            name = signal.Signals(signum).name
            if received["count"] == 1:
                self._log.info("runner %s: %s: draining (%s again aborts)", self.worker_id, name, name)
                asyncio.ensure_future(self.stop_async(drain=True))
            else:
                self._log.info("runner %s: %s again: aborting", self.worker_id, name)
                asyncio.ensure_future(self.stop_async(drain=False))

        installed = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
        return installed

    # -- sessions ---------------------------------------------------------------------------------------

    async def _maintain_session(self) -> None:
        failures = 0
        while self._state != "stopped":
            session_replaced_by = None
            welcomed, drained, failure = await self._run_session()
            if self._session is not None:
                session_replaced_by = self._session.replaced_by
            if self._state == "stopped":
                break
            if session_replaced_by is not None or (failure is not None and is_replaced(failure.code(), failure.details() or "")):
                details = failure.details() if failure is not None and failure.details() else ""
                if session_replaced_by is not None and not details:
                    details = f"a newer session {session_replaced_by.new_session_id} from {session_replaced_by.new_peer or 'another server'}"
                self._stop_for_good(SessionReplacedError(self.worker_id, details))
                break
            if not welcomed and failure is not None and failure.code() in PERMANENT_HELLO_CODES:
                self._stop_for_good(RunnerRefusedError(failure.code(), failure.details() or ""))
                break
            # A server that asked us to drain is going away: back off as from a failure.
            failures = 0 if welcomed and not drained else failures + 1
            delay = self._backoff(failures)
            self._log.debug("runner %s: reconnecting in %.0f ms", self.worker_id, delay * 1000)
            await self._wait_until(lambda: self._state == "stopped", timeout=delay)

    def _backoff(self, failures: int) -> float:
        """The ceiling doubles per failed try up to the maximum; the wait is a random point in its upper half."""
        ceiling = min(self._max_delay, self._initial_delay * 2 ** min(failures, 30))
        return ceiling / 2 + random.random() * ceiling / 2

    async def _run_session(self) -> Tuple[bool, bool, Optional[grpc.aio.AioRpcError]]:
        outgoing: asyncio.Queue = asyncio.Queue()
        call = self._stub.Session(metadata=_security.auth_metadata(self._token))
        writer = asyncio.ensure_future(write_requests(call, outgoing))
        session = Session(call=call, outgoing=outgoing)
        self._session = session
        self._goodbye_sent = False
        hello = runner_pb2.Hello(
            worker_id=self.worker_id,
            labels=self.labels,
            capacity=self.capacity,
            client_version=self.client_version,
            running_attempt_ids=self._attempts_to_resume(),
            # Fewer messages per attempt where the server agrees (Welcome says which); an older server ignores both.
            terminal_update_returns_credit=True,
            accepts_assignment_batches=True,
        )
        outgoing.put_nowait(runner_pb2.SessionRequest(hello=hello))
        failure: Optional[grpc.aio.AioRpcError] = None
        try:
            while True:
                if session.welcomed:
                    response = await call.read()
                else:
                    try:
                        response = await asyncio.wait_for(call.read(), self._welcome_timeout)
                    except asyncio.TimeoutError:
                        self._log.warning("runner %s: no Welcome within %.0f s, retrying", self.worker_id, self._welcome_timeout)
                        call.cancel()
                        break
                if response is grpc.aio.EOF:
                    break
                self._on_response(session, response)
        except grpc.aio.AioRpcError as error:
            failure = error
        except asyncio.CancelledError:
            if not call.cancelled():
                raise  # the task itself was cancelled
        finally:
            writer.cancel()
            session.ended.set()
            self._on_session_ended(session, failure)
        return session.welcomed, session.draining, failure

    def _attempts_to_resume(self) -> List[str]:
        """Attempts still executing plus those whose result the server has not acknowledged yet."""
        ids = dict.fromkeys(self._held)
        ids.update(dict.fromkeys(update.attempt_id for update in self._unsent))
        ids.update(dict.fromkeys(sent.update.attempt_id for sent in self._unconfirmed))
        return list(ids)

    def _on_session_ended(self, session: Session, failure: Optional[grpc.aio.AioRpcError]) -> None:
        if self._session is session:
            self._session = None
        # Without an ack we cannot know whether the server saw these: send them again.
        self._unsent = [sent.update for sent in self._unconfirmed] + self._unsent
        self._unconfirmed = []
        why = f"{failure.code().name}: {failure.details()}" if failure is not None else "closed"
        if session.welcomed:
            level = logging.WARNING if failure is not None and self._state != "stopped" else logging.INFO
            self._log.log(level, "runner %s: session %s ended (%s)", self.worker_id, session.id, why)
        elif self._state != "stopped":
            self._log.warning("runner %s: could not open a session (%s)", self.worker_id, why)
        self._emit("disconnected", failure)
        self._notify()

    def _on_response(self, session: Session, response: runner_pb2.SessionResponse) -> None:
        if self._session is not session:
            return
        kind = response.WhichOneof("message")
        if kind == "welcome":
            self._on_welcome(session, response.welcome)
        elif kind == "assignment":
            self._on_assignment(session, response.assignment)
        elif kind == "assignment_batch":
            for assignment in response.assignment_batch.assignments:
                self._on_assignment(session, assignment)
        elif kind == "cancel":
            self._on_cancel(response.cancel.attempt_id, response.cancel.reason)
        elif kind == "rejected":
            self._on_rejected(response.rejected)
        elif kind == "drain":
            self._log.info("runner %s: server asked to drain (%s)", self.worker_id, response.drain.reason)
            session.draining = True
            self._emit("drain", response.drain)
            if response.drain.exit:
                # An operator drained this worker (DrainWorker): finish and report what is in hand, then run() returns.
                asyncio.ensure_future(self.stop_async(drain=True))
            self._close_if_drained(session)
        elif kind == "session_replaced":
            # Said just before the server ends this stream with ABORTED: another process opened a newer session
            # for this worker id. Not reconnecting is decided when the stream ends (_maintain_session).
            replaced = response.session_replaced
            self._log.warning(
                "runner %s: session replaced by a newer session %s from %s: another runner uses this worker id",
                self.worker_id, replaced.new_session_id or "(on another server)", replaced.new_peer or "another server",
            )
            session.replaced_by = replaced
        elif kind == "heartbeat_ack":
            self._last_ack = response.heartbeat_ack.sequence
            self._unconfirmed = [s for s in self._unconfirmed if s.confirmed_by_sequence > response.heartbeat_ack.sequence]
            self._emit("heartbeat_ack", response.heartbeat_ack)
            self._notify()

    def _on_welcome(self, session: Session, welcome: runner_pb2.Welcome) -> None:
        session.welcomed = True
        session.id = welcome.session_id
        interval = welcome.heartbeat_interval.seconds + welcome.heartbeat_interval.nanos / 1e9
        if interval > 0:
            self._beats.interval_s = interval
        resumed = list(welcome.resumed_attempt_ids)
        self._log.info("runner %s: session %s started%s", self.worker_id, session.id, f" (resumed {', '.join(resumed)})" if resumed else "")
        session.terminal_update_returns_credit = welcome.terminal_update_returns_credit
        if session.terminal_update_returns_credit:
            session.credit_returning.update(resumed)
        # Held attempts the server did not resume are no longer ours; it cancelled them.
        for attempt_id in [a for a in self._held if a not in resumed]:
            self._on_cancel(attempt_id, "not resumed after a reconnect")
        unsent, self._unsent = self._unsent, []
        # Results of resumed attempts that finished while disconnected return their credits as they are sent.
        returned = sum(1 for update in unsent if self._send_update(update))
        if self._state == "draining":
            self._say_goodbye("runner stopping")
        else:
            self._grant(session, self.capacity - len(self._held) - returned)
        self._request_beat()
        self._emit("connected", welcome)
        self._notify()

    def _on_assignment(self, session: Session, assignment: runner_pb2.Assignment) -> None:
        attempt_id = assignment.attempt.attempt_id
        if attempt_id in self._held:
            self._log.warning("runner %s: attempt %s assigned twice; keeping the first", self.worker_id, attempt_id)
            return
        if session.terminal_update_returns_credit:
            session.credit_returning.add(attempt_id)
        job = Job(assignment.rollout, assignment.attempt, lambda metadata: self._threadsafe(self._report_running, attempt_id, metadata))
        held = Held(job=job)
        self._held[attempt_id] = held
        self._emit("assignment", job)
        held.task = asyncio.ensure_future(self._execute(held))
        self._notify()

    def _on_cancel(self, attempt_id: str, reason: str) -> None:
        held = self._held.get(attempt_id)
        if held is None or held.cancelled:
            self._log.debug("runner %s: cancel for attempt %s, which is not running here", self.worker_id, attempt_id)
            return
        held.cancelled = True
        self._cancel_job(held, reason or "attempt cancelled")
        self._emit("cancelled", held.job)

    def _on_rejected(self, rejected: runner_pb2.Rejected) -> None:
        if rejected.request_kind == "attempt_update" and rejected.attempt_id:
            # Rejected means processed: resending it after a reconnect would be rejected again.
            self._unconfirmed = [s for s in self._unconfirmed if s.update.attempt_id != rejected.attempt_id]
        if not self._listeners:
            self._log.warning(
                "runner %s: server rejected %s%s (%s): %s",
                self.worker_id,
                rejected.request_kind or "a message",
                f" for attempt {rejected.attempt_id}" if rejected.attempt_id else "",
                code_name(rejected.code),
                rejected.message,
            )
        self._emit("rejected", rejected)
        self._notify()

    def _close_if_drained(self, session: Session) -> None:
        if self._held or session.closing:
            return
        self._half_close(session)

        async def cancel_later() -> None:
            # A server that keeps the stream open after we are done must not pin us to it.
            try:
                await asyncio.wait_for(session.ended.wait(), _CLOSE_GRACE_S)
            except asyncio.TimeoutError:
                session.call.cancel()

        asyncio.ensure_future(cancel_later())

    def _half_close(self, session: Session) -> None:
        if not session.closing:
            session.closing = True
            session.outgoing.put_nowait(None)

    # -- jobs -------------------------------------------------------------------------------------------

    async def _execute(self, held: Held) -> None:
        job = held.job
        if not job.cancelled.is_set():
            self._report_running(job.attempt_id, None)
        try:
            result = await call_handler(self._handler, job)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            self._finish(held, None)
            return
        except Exception as error:
            self._log.debug("attempt %s failed: %s", job.attempt_id, error)
            self._finish(held, attempt_update(job.attempt_id, attempt_pb2.ATTEMPT_STATUS_FAILED, _describe(error)))
            return
        self._finish(held, self._success_update(job.attempt_id, result))

    def _success_update(self, attempt_id: str, result: Any) -> runner_pb2.AttemptUpdate:
        """SUCCEEDED with the result, or FAILED with the reason the server would refuse it for."""
        update = attempt_update(attempt_id, attempt_pb2.ATTEMPT_STATUS_SUCCEEDED)
        if result is Job.NO_RESULT:
            return update
        try:
            violation = result_bound_violation(result)
            value = to_value(result)
        except (TypeError, ValueError) as error:
            violation = f"the handler's result is not JSON: {_describe(error)}"
        if violation is not None:
            self._log.warning("runner %s: attempt %s: %s; reporting FAILED", self.worker_id, attempt_id, violation)
            return attempt_update(attempt_id, attempt_pb2.ATTEMPT_STATUS_FAILED, violation)
        update.result.CopyFrom(value)
        return update

    def _cancel_job(self, held: Held, reason: str) -> None:
        job = held.job
        if job.cancel_reason is None:
            job.cancel_reason = reason
        job.cancelled.set()
        if held.task is not None and not held.task.done() and not held.finished:
            held.task.cancel()  # an async handler sees CancelledError; a sync one's slot waits for its thread

    def _finish(self, held: Held, update: Optional[runner_pb2.AttemptUpdate]) -> None:
        if held.finished:
            return
        held.finished = True
        self._held.pop(held.job.attempt_id, None)
        # The server already ended a cancelled attempt; a result would only be rejected.
        returned = update is not None and not held.cancelled and self._state != "stopped" and self._send_update(update)
        session = self._session
        if session is not None and session.welcomed:
            if not returned:
                self._grant(session, 1)
            if session.draining:
                self._close_if_drained(session)
        self._notify()

    def _report_running(self, attempt_id: str, metadata: Optional[dict]) -> None:
        held = self._held.get(attempt_id)
        if held is None or held.finished or held.cancelled:
            return
        self._send_update(attempt_update(attempt_id, attempt_pb2.ATTEMPT_STATUS_RUNNING, metadata=to_struct(metadata)))

    def _threadsafe(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn(*args)
        else:
            loop.call_soon_threadsafe(fn, *args)

    # -- writes, credits, heartbeats --------------------------------------------------------------------

    def _grant(self, session: Session, slots: int) -> None:
        if slots <= 0 or self._state != "running" or session.draining or session.closing:
            return
        self._write(session, runner_pb2.SessionRequest(ready=runner_pb2.Ready(slots=slots)))

    def _send_update(self, update: runner_pb2.AttemptUpdate) -> bool:
        """Writes an update, or keeps it for the next session. True when it returned its attempt's credit."""
        session = self._session
        if session is None or not session.welcomed or session.closing:
            self._unsent.append(update)
            return False
        self._write(session, runner_pb2.SessionRequest(attempt_update=update))
        if update.status not in FINAL_STATUSES:
            return False
        self._unconfirmed.append(Sent(update, self._beats.next_sequence))
        if update.attempt_id in session.credit_returning:
            session.credit_returning.discard(update.attempt_id)
            return True
        return False

    def _write(self, session: Session, request: runner_pb2.SessionRequest) -> None:
        if not session.closing:
            session.outgoing.put_nowait(request)

    def _request_beat(self, urgent: bool = False) -> None:
        if self._beats is not None:
            self._beats.request(urgent)

    def _beat_target(self) -> Optional[Callable[[runner_pb2.Heartbeat], None]]:
        session = self._session
        if self._state == "stopped" or session is None or not session.welcomed or session.closing:
            return None
        return lambda beat: self._write(session, runner_pb2.SessionRequest(heartbeat=beat))

    # -- waiting ----------------------------------------------------------------------------------------

    async def _wait_until(self, condition: Callable[[], bool], timeout: Optional[float] = None) -> bool:
        if condition():
            return True
        future = asyncio.get_running_loop().create_future()
        entry = (condition, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except asyncio.TimeoutError:
            return condition()
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def _notify(self) -> None:
        for condition, future in list(self._waiters):
            if not future.done() and condition():
                future.set_result(None)

    def _emit(self, event: str, value: Any) -> None:
        for listener in list(self._listeners):
            try:
                listener(event, value)
            except Exception as error:
                self._log.warning("runner %s: listener for %s failed: %s", self.worker_id, event, error)


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__
