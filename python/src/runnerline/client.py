"""Client: enqueue rollouts, wait for their results, get, list and cancel them, with plain Python values."""

from __future__ import annotations

import collections
import queue
import time
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import grpc
from google.protobuf import json_format

from runnerline import _security
from runnerline._values import DurationLike, from_value, parse_seconds, to_duration, to_struct, to_value
from runnerline.errors import ClientError
from runnerline.v1 import attempt_pb2, rollout_pb2, rollout_pb2_grpc

__all__ = ["Client"]

RolloutRef = Union[str, Dict[str, Any]]
#: Longest single WaitRollouts call; a longer wait makes several.
_WAIT_SLICE_S = 60.0
#: WaitRollouts calls in flight at once while waiting for many rollouts one by one.
_WAIT_WINDOW = 64
_CONFIG_DURATIONS = ("timeout", "unresponsive_timeout", "deadline", "queue_timeout", "retry_delay", "max_retry_delay")
_CONFIG_FIELDS = set(_CONFIG_DURATIONS) | {"max_attempts", "retry_on", "required_labels", "retry_backoff_coefficient"}


class Client:
    """The RolloutService as plain values.

    Rollouts come back as dicts with the proto's field names: "rollout_id", "status" ("QUEUING",
    "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", ...), "input" and "result" as plain values,
    "failure_reason", "attempt_count", "config" and so on; times as RFC 3339 strings. Durations are
    given as seconds (30, 0.5) or strings ("30s", "250ms", "5m"). Failed calls raise ClientError with
    the gRPC status code and the server's message.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        token: Optional[str] = None,
        tls: bool = False,
        tls_ca: _security.PemSource = None,
        tls_cert: _security.PemSource = None,
        tls_key: _security.PemSource = None,
        call_timeout: DurationLike = 30,
        channel_options: Sequence[Tuple[str, Any]] = (),
    ):
        credentials = _security.channel_credentials(tls, tls_ca, tls_cert, tls_key)
        options = _security.channel_options(channel_options)
        if credentials is None:
            self._channel = grpc.insecure_channel(address, options=options)
        else:
            self._channel = grpc.secure_channel(address, credentials, options=options)
        self._stub = rollout_pb2_grpc.RolloutServiceStub(self._channel)
        self._metadata = _security.auth_metadata(token)
        self._call_timeout = parse_seconds(call_timeout)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- calls ------------------------------------------------------------------------------------------

    def enqueue(
        self,
        input: Any = None,
        *,
        rollout_id: Optional[str] = None,
        config: Optional[Dict[str, Any]] = None,
        mode: Optional[str] = None,
        priority: int = 0,
        metadata: Optional[Dict[str, Any]] = None,
        resources_id: str = "",
    ) -> Dict[str, Any]:
        """Queues one rollout and returns it. `rollout_id` is an idempotency key: enqueueing it again
        returns the same rollout. `config`: {"max_attempts": 3, "retry_on": ["FAILED", "TIMEOUT"],
        "timeout": "10m", "required_labels": {"gpu": "h100"}, ...} (RolloutConfig's fields)."""
        request = _enqueue_request(input, rollout_id, config, mode, priority, metadata, resources_id)
        return rollout_dict(self._call("EnqueueRollout", request).rollout)

    def enqueue_many(
        self,
        inputs: Iterable[Any],
        *,
        config: Optional[Dict[str, Any]] = None,
        mode: Optional[str] = None,
        priority: int = 0,
        metadata: Optional[Dict[str, Any]] = None,
    ) -> List[Dict[str, Any]]:
        """Queues one rollout per input, with the same options, in one call; returns them in order."""
        requests = [_enqueue_request(value, None, config, mode, priority, metadata, "") for value in inputs]
        if not requests:
            return []
        response = self._call("EnqueueRollouts", rollout_pb2.EnqueueRolloutsRequest(requests=requests))
        return [rollout_dict(rollout) for rollout in response.rollouts]

    def get(self, rollout_id: RolloutRef) -> Dict[str, Any]:
        return rollout_dict(self._call("GetRollout", rollout_pb2.GetRolloutRequest(rollout_id=_id_of(rollout_id))).rollout)

    def cancel(self, rollout_id: RolloutRef) -> Dict[str, Any]:
        """Cancels a rollout that has not finished (its runner is told at once); FAILED_PRECONDITION once finished."""
        request = rollout_pb2.CancelRolloutRequest(rollout_id=_id_of(rollout_id))
        return rollout_dict(self._call("CancelRollout", request).rollout)

    def list(
        self,
        *,
        statuses: Sequence[str] = (),
        filter: str = "",
        order_by: str = "",
        rollout_id_contains: str = "",
        page_size: int = 0,
        limit: Optional[int] = None,
    ) -> Iterator[Dict[str, Any]]:
        """Rollouts, page after page (at most `limit`). statuses: e.g. ["RUNNING", "QUEUING"];
        filter: the list filter language (docs/operators.md), e.g. 'create_time > now - 1h'."""
        request = rollout_pb2.ListRolloutsRequest(
            statuses=[_enum(rollout_pb2.RolloutStatus, "ROLLOUT_STATUS_", s) for s in statuses],
            filter=filter,
            order_by=order_by,
            rollout_id_contains=rollout_id_contains,
            page_size=page_size,
        )
        yielded = 0
        while True:
            response = self._call("ListRollouts", request)
            for rollout in response.rollouts:
                if limit is not None and yielded >= limit:
                    return
                yielded += 1
                yield rollout_dict(rollout)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    def wait(self, rollouts: Iterable[RolloutRef], timeout: Optional[DurationLike] = None) -> Iterator[Dict[str, Any]]:
        """Yields each rollout (ids or rollout dicts) once it has finished (SUCCEEDED, FAILED, CANCELLED),
        in the order they finish. Raises TimeoutError naming those still unfinished when `timeout` passes
        (None: no limit)."""
        ids = list(dict.fromkeys(_id_of(ref) for ref in rollouts))
        deadline = None if timeout is None else time.monotonic() + parse_seconds(timeout)
        pending = collections.deque(ids)
        finished: "queue.Queue[Tuple[str, Any]]" = queue.Queue()
        in_flight: Dict[str, grpc.Future] = {}
        unfinished: List[str] = []

        def launch(rollout_id: str) -> None:
            remaining = _WAIT_SLICE_S if deadline is None else max(0.0, min(_WAIT_SLICE_S, deadline - time.monotonic()))
            request = rollout_pb2.WaitRolloutsRequest(rollout_ids=[rollout_id], timeout=to_duration(remaining))
            future = self._stub.WaitRollouts.future(request, timeout=remaining + self._call_timeout, metadata=self._metadata)
            in_flight[rollout_id] = future
            future.add_done_callback(lambda f: finished.put((rollout_id, f)))

        try:
            while pending or in_flight:
                while pending and len(in_flight) < _WAIT_WINDOW:
                    launch(pending.popleft())
                rollout_id, future = finished.get()
                in_flight.pop(rollout_id, None)
                try:
                    response = future.result()
                except grpc.RpcError as error:
                    raise ClientError("WaitRollouts", error.code(), error.details() or "") from None
                if response.rollouts:
                    yield rollout_dict(response.rollouts[0])
                elif rollout_id in response.remaining_rollout_ids:
                    yield self.get(rollout_id)  # finished, but too large for the wait's response
                elif deadline is None or time.monotonic() < deadline:
                    pending.append(rollout_id)
                else:
                    unfinished.append(rollout_id)
        finally:
            for future in in_flight.values():
                future.cancel()
        if unfinished:
            raise TimeoutError(f"{len(unfinished)} rollout(s) not finished within {timeout}: {', '.join(unfinished[:10])}")

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=self._call_timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise ClientError(method, error.code(), error.details() or "") from None


def rollout_dict(rollout: rollout_pb2.Rollout) -> Dict[str, Any]:
    """A Rollout as plain values: proto field names, enum names without their prefix, input and result
    as plain values, int64 as int."""
    out = json_format.MessageToDict(rollout, preserving_proto_field_name=True)
    out["input"] = from_value(rollout.input) if rollout.HasField("input") else None
    if rollout.HasField("result"):
        out["result"] = from_value(rollout.result)
    out["status"] = _short(rollout_pb2.RolloutStatus.Name(rollout.status), "ROLLOUT_STATUS_")
    if "mode" in out:
        out["mode"] = _short(out["mode"], "ROLLOUT_MODE_")
    if "version" in out:
        out["version"] = int(out["version"])
    config = out.get("config")
    if config and "retry_on" in config:
        config["retry_on"] = [_short(name, "ATTEMPT_STATUS_") for name in config["retry_on"]]
    return out


def _enqueue_request(input, rollout_id, config, mode, priority, metadata, resources_id) -> rollout_pb2.EnqueueRolloutRequest:
    request = rollout_pb2.EnqueueRolloutRequest(rollout_id=rollout_id or "", priority=priority, resources_id=resources_id)
    request.input.CopyFrom(to_value(input))
    if mode is not None:
        request.mode = _enum(rollout_pb2.RolloutMode, "ROLLOUT_MODE_", mode)
    if metadata is not None:
        request.metadata.CopyFrom(to_struct(metadata))
    if config:
        request.config.CopyFrom(_config(config))
    return request


def _config(values: Dict[str, Any]) -> rollout_pb2.RolloutConfig:
    unknown = set(values) - _CONFIG_FIELDS
    if unknown:
        raise ValueError(f"unknown config field(s) {sorted(unknown)}; known: {sorted(_CONFIG_FIELDS)}")
    config = rollout_pb2.RolloutConfig()
    for name, value in values.items():
        if value is None:
            continue
        if name in _CONFIG_DURATIONS:
            getattr(config, name).CopyFrom(to_duration(value))
        elif name == "retry_on":
            config.retry_on.extend(_enum(attempt_pb2.AttemptStatus, "ATTEMPT_STATUS_", status) for status in value)
        elif name == "required_labels":
            config.required_labels.update(value)
        else:
            setattr(config, name, value)
    return config


def _enum(enum: Any, prefix: str, value: Union[str, int]) -> int:
    if isinstance(value, int):
        return value
    name = value.upper()
    try:
        return enum.Value(name if name.startswith(prefix) else prefix + name)
    except ValueError:
        known = [n[len(prefix):] for n in enum.keys() if not n.endswith("UNSPECIFIED")]
        raise ValueError(f"unknown value {value!r}; one of {known}") from None


def _short(name: str, prefix: str) -> str:
    return name[len(prefix):] if name.startswith(prefix) else name


def _id_of(ref: RolloutRef) -> str:
    if isinstance(ref, dict):
        return ref["rollout_id"]
    if isinstance(ref, str):
        return ref
    raise TypeError(f"expected a rollout id or a rollout dict, got {type(ref).__name__}")
