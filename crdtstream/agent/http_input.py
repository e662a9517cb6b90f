"""What the HTTP API accepts: keys, JSON bodies, listing parameters, and the counts of refusals.

Every check here runs before anything is written, so a refused request changes nothing. A key
in a URL goes through the same function as a statsd key (:func:`crdtstream.ingest.canonical_key`):
tags are sorted and de-duplicated, and spaces, control bytes and NUL are refused, so
``GET /v1/keys/hits%23region:eu,env:prod`` reads what statsd stored as
``hits#env:prod,region:eu``. ``/`` is allowed, as statsd allows it (send it as ``%2F``).

A refusal is an :class:`InputError` with an HTTP status and a short machine ``reason``; the
server counts refusals by reason (:class:`HttpStats`) and answers ``{"error", "reason"}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from crdtstream.ingest import MAX_LINE_BYTES, LineRejectedError, canonical_key

__all__ = [
    "BODY_FIELDS",
    "KEY_BYTES_MAX",
    "KEY_WRITE_BODY_BYTES_MAX",
    "LIST_LIMIT_MAX",
    "OPERATIONS",
    "HttpStats",
    "InputError",
    "ListQuery",
    "WriteBody",
    "check_value",
    "parse_key",
    "parse_list_query",
    "parse_write_body",
]

KEY_BYTES_MAX: Final = MAX_LINE_BYTES
"""A key longer than the longest statsd line could never be written by statsd either."""
KEY_WRITE_BODY_BYTES_MAX: Final = 64 * 1024
JSON_DEPTH_MAX: Final = 4
"""A write body is an object of scalars; nothing legitimate nests deeper."""
LIST_LIMIT_DEFAULT: Final = 100
LIST_LIMIT_MAX: Final = 1_000
INTEGER_MAGNITUDE_MAX: Final = 2**63 - 1

OPERATIONS: Final[dict[str, tuple[str, ...]]] = {
    "add": ("counter",),
    "conditional_add": ("counter",),
    "consume": ("counter",),
    "set": ("gauge",),
    "observe": ("distribution", "max", "min"),
    "insert": ("set", "distinct"),
    "remove": ("set",),
}
"""Each operation and the kinds it applies to (the first is the kind a new key gets)."""
BODY_FIELDS: Final = frozenset(("op", "value", "kind", "limit", "timestamp_ms"))


class InputError(ValueError):
    """A request refused before anything was done: ``status`` (4xx) and a ``reason`` code."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class HttpStats:
    """Requests by (route, method, status), refusals by reason, and 5xx answers (each a bug
    or an unavailable majority)."""

    requests: dict[tuple[str, str, int], int] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)
    internal_errors: int = 0

    def count_request(self, route: str, method: str, status: int) -> None:
        """Count one answered request."""
        slot = (route, method, status)
        self.requests[slot] = self.requests.get(slot, 0) + 1

    def count_refusal(self, reason: str) -> None:
        """Count one 4xx answer by its reason."""
        self.refusals[reason] = self.refusals.get(reason, 0) + 1


def parse_key(raw: str) -> str:
    """The canonical form of a key taken from a URL; raises :class:`InputError` (400)."""
    encoded = raw.encode("utf-8", "surrogatepass")
    if len(encoded) > KEY_BYTES_MAX:
        raise InputError(400, "key_too_long", f"a key is at most {KEY_BYTES_MAX} bytes")
    name, separator, tags = encoded.partition(b"#")
    try:
        return canonical_key(name, tags if separator else None)
    except LineRejectedError as error:
        reason = str(error.args[0]) if error.args else "bad_key"
        raise InputError(400, reason, f"invalid key {raw!r}: {reason}") from None


def _refuse_constant(name: str) -> float:
    raise InputError(400, "non_finite_number", f"{name} is not a number JSON allows")


def _depth(value: object, limit: int) -> int:
    """Nesting depth of a parsed JSON value, stopping once past ``limit``."""
    if limit < 0:
        return 1
    if isinstance(value, dict):
        return 1 + max((_depth(v, limit - 1) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v, limit - 1) for v in value), default=0)
    return 0


def parse_json(data: bytes, max_bytes: int) -> Any:
    """``data`` as JSON: at most ``max_bytes``, UTF-8, finite numbers, shallow nesting."""
    if len(data) > max_bytes:
        raise InputError(413, "body_too_large", f"the body is over {max_bytes} bytes")
    try:
        # Decoded here: json.loads would guess UTF-16 or UTF-32 from the first bytes.
        parsed = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except InputError:
        raise
    except RecursionError:
        raise InputError(400, "json_too_deep", "the JSON body nests too deeply") from None
    except UnicodeDecodeError:
        raise InputError(400, "bad_encoding", "the body must be UTF-8 JSON") from None
    except json.JSONDecodeError as error:
        raise InputError(400, "bad_json", f"the body is not JSON: {error.msg}") from None
    except ValueError as error:  # an integer literal over Python's digit limit
        raise InputError(400, "bad_json", f"the body is not usable JSON: {error}") from None
    if _depth(parsed, JSON_DEPTH_MAX) > JSON_DEPTH_MAX:
        raise InputError(400, "json_too_deep", f"the JSON body nests over {JSON_DEPTH_MAX} deep")
    return parsed


def is_number(value: object) -> bool:
    """A JSON number: int or float, never a boolean."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite_number(value: object, name: str) -> float | int:
    if not is_number(value):
        raise InputError(400, "bad_type", f"{name} must be a number, got {value!r}")
    if isinstance(value, int):
        if abs(value) > INTEGER_MAGNITUDE_MAX:
            raise InputError(400, "out_of_range", f"{name} {value} is out of range")
        return value
    assert isinstance(value, float)
    if not math.isfinite(value):
        raise InputError(400, "non_finite_number", f"{name} must be finite")
    return value


def check_value(kind: str, value: object) -> float | int | str:
    """``value`` if a ``kind`` key can take it; else :class:`InputError` (400)."""
    if kind in ("set", "distinct"):
        if isinstance(value, str):
            if len(value.encode("utf-8", "surrogatepass")) > KEY_BYTES_MAX:
                raise InputError(400, "out_of_range", "a set item is at most 8 KiB")
            return value
        if kind == "distinct" and isinstance(value, int) and not isinstance(value, bool):
            return _finite_number(value, "value")
        raise InputError(400, "bad_type", f"a {kind} item must be a string, got {value!r}")
    return _finite_number(value, "value")


@dataclass(frozen=True, slots=True)
class WriteBody:
    """A checked ``POST /v1/keys/{key}`` body."""

    op: str
    value: float | int | str
    kind: str
    limit: float | int | None
    timestamp_ms: int | None


def parse_write_body(data: bytes, existing_kind: str | None) -> WriteBody:
    """The body of a key write, every field checked against the kind the key will have."""
    body = parse_json(data, KEY_WRITE_BODY_BYTES_MAX)
    if not isinstance(body, dict) or not isinstance(body.get("op"), str) or "value" not in body:
        raise InputError(400, "bad_body", 'body must be JSON {"op": "<operation>", "value": ...}')
    unknown = set(body) - BODY_FIELDS
    if unknown:
        raise InputError(400, "unknown_field", f"unknown fields {sorted(unknown)}")
    op = body["op"]
    kinds = OPERATIONS.get(op)
    if kinds is None:
        raise InputError(
            400, "unknown_op", f"unknown op {op!r}; expected one of {list(OPERATIONS)}"
        )
    kind = _kind_of_write(body, kinds, existing_kind)
    if kind not in kinds:
        raise InputError(409, "kind_conflict", f"the key is a {kind}; {op!r} applies to {kinds}")
    limit = body.get("limit")
    if op == "conditional_add" and limit is None:
        raise InputError(400, "missing_limit", "conditional_add needs a limit")
    timestamp_ms = body.get("timestamp_ms")
    if timestamp_ms is not None and (type(timestamp_ms) is not int or timestamp_ms < 0):
        raise InputError(400, "bad_type", "timestamp_ms must be a non-negative integer")
    if timestamp_ms is not None and timestamp_ms > INTEGER_MAGNITUDE_MAX:
        raise InputError(400, "out_of_range", "timestamp_ms is out of range")
    return WriteBody(
        op=op,
        value=check_value(kind, body["value"]),
        kind=kind,
        limit=None if limit is None else _finite_number(limit, "limit"),
        timestamp_ms=timestamp_ms,
    )


def _kind_of_write(body: Mapping[str, Any], kinds: tuple[str, ...], existing: str | None) -> str:
    requested = body.get("kind")
    if requested is not None and not isinstance(requested, str):
        raise InputError(400, "bad_type", f"kind must be a string, got {requested!r}")
    if existing is not None:
        if requested is not None and requested != existing:
            raise InputError(409, "kind_conflict", f"the key is a {existing}, not a {requested}")
        return existing
    return requested if requested is not None else kinds[0]


@dataclass(frozen=True, slots=True)
class ListQuery:
    """``GET /v1/keys`` parameters: keys starting with ``prefix``, after ``after``, at most
    ``limit``."""

    prefix: str
    after: str
    limit: int


def parse_list_query(query: Mapping[str, str]) -> ListQuery:
    """Checked listing parameters (unknown parameters are refused, to catch typos)."""
    unknown = set(query) - {"prefix", "after", "limit"}
    if unknown:
        raise InputError(400, "unknown_parameter", f"unknown parameters {sorted(unknown)}")
    limit_text = query.get("limit", str(LIST_LIMIT_DEFAULT))
    if not limit_text.isascii() or not limit_text.isdigit() or len(limit_text) > 6:
        raise InputError(400, "bad_limit", f"limit must be an integer, got {limit_text!r}")
    limit = int(limit_text)
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise InputError(400, "bad_limit", f"limit must be in [1, {LIST_LIMIT_MAX}]")
    return ListQuery(query.get("prefix", ""), query.get("after", ""), limit)
