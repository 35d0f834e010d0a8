"""Plain Python values <-> protobuf well-known types: JSON values, Structs, Durations, Timestamps."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Optional, Union

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

#: The server's bounds on a result (AttemptUpdate.result): bytes as JSON and nesting depth.
RESULT_MAX_BYTES = 64 * 1024
RESULT_MAX_DEPTH = 32

JsonValue = Union[None, bool, int, float, str, list, dict]
DurationLike = Union[int, float, str, duration_pb2.Duration]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def to_value(value: Any) -> struct_pb2.Value:
    """A JSON value (None, bool, number, str, list, dict with str keys) as google.protobuf.Value.

    Raises ValueError for anything JSON cannot hold (NaN, infinities, other types, non-string keys).
    """
    text = to_json_text(value)
    message = struct_pb2.Value()
    json_format.Parse(text, message)
    return message


def to_json_text(value: Any) -> str:
    """Strict JSON text of `value`: ValueError for NaN, infinities, sets, objects, non-string keys."""
    _check_keys(value, 0)
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"not a JSON value: {error}") from None


def _check_keys(value: Any, depth: int) -> None:
    if depth > 1000:
        raise ValueError("not a JSON value: nested too deeply")
    if isinstance(value, dict):
        for key, child in value.items():
            if not isinstance(key, str):
                raise ValueError(f"not a JSON value: object key {key!r} is not a string")
            _check_keys(child, depth + 1)
    elif isinstance(value, (list, tuple)):
        for child in value:
            _check_keys(child, depth + 1)


def from_value(message: Optional[struct_pb2.Value]) -> JsonValue:
    """google.protobuf.Value as a plain value; integral numbers come back as int."""
    if message is None:
        return None
    return _integral(json_format.MessageToDict(message))


def to_struct(value: Optional[dict]) -> Optional[struct_pb2.Struct]:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"expected a dict, got {type(value).__name__}")
    message = struct_pb2.Struct()
    json_format.Parse(to_json_text(value), message)
    return message


def _integral(value: Any) -> Any:
    """JSON numbers travel as doubles; 3.0 comes back as 3 so that round trips compare equal."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value


def result_bound_violation(value: Any) -> Optional[str]:
    """Why the server would refuse `value` as a result, or None (mirrors the server's rule)."""
    if _depth(value) > RESULT_MAX_DEPTH:
        return f"the result nests deeper than {RESULT_MAX_DEPTH} levels"
    size = len(json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode())
    if size > RESULT_MAX_BYTES:
        return f"the result is {size} bytes as JSON; at most {RESULT_MAX_BYTES} are accepted"
    return None


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        children = list(value.values())
    elif isinstance(value, (list, tuple)):
        children = list(value)
    else:
        return 0
    return 1 + max((_depth(child) for child in children), default=0)


def parse_seconds(value: DurationLike) -> float:
    """Seconds from a number of seconds or a string such as "30s", "250ms", "5m", "1h30m", "2d"."""
    if isinstance(value, duration_pb2.Duration):
        return value.seconds + value.nanos / 1e9
    if isinstance(value, bool):
        raise ValueError(f"a duration must be seconds or a string such as '30s', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text or _DURATION.sub("", text) != "":
            raise ValueError(f"a duration must be seconds or a string such as '30s', '250ms', '5m', got {value!r}")
        seconds = sum(float(amount) * _UNITS[unit] for amount, unit in _DURATION.findall(text))
    else:
        raise ValueError(f"a duration must be seconds or a string such as '30s', got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be finite and not negative, got {value!r}")
    return seconds


def to_duration(value: DurationLike) -> duration_pb2.Duration:
    seconds = parse_seconds(value)
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=int(round((seconds - whole) * 1e9)))


def timestamp_now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp
