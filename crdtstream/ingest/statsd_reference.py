"""The per-line statsd / DogStatsD parser: the definition of the grammar and the test oracle.

It reads one line at a time with plain Python, so it is slow but easy to check against the
README. The vectorised parser (:mod:`crdtstream.ingest.statsd`) must return a result equal to
this one's for any input, and hands every line it cannot prove simple to :func:`parse_line`.
Nothing is memoised here, so it is also the honest per-line baseline of the benchmark.

Grammar of a line (fields separated by ``|``)::

    <name>:<value>[:<value>...]|<type>[|@<rate>][|#<tag>[,<tag>...]][|T<unix seconds>][|<ext>:...]

Checks run in the order of :data:`~crdtstream.ingest.batch.REASONS` (except that an empty value
is ``missing_value`` when the values are read, last); the first failing one names the reason a
line is rejected for. This module is pure: no clock, no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from crdtstream.crdt.hashing import hash64_many
from crdtstream.errors import DecodeError
from crdtstream.ingest.batch import Kind, KindBatch, ParseResult

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_TIMESTAMP_DIGITS",
    "TYPE_KINDS",
    "LineRejectedError",
    "ParsedLine",
    "canonical_key",
    "canonical_name",
    "canonical_tags",
    "number_or_none",
    "parse_line",
    "parse_reference",
    "split_lines",
]

MAX_LINE_BYTES: Final = 8192
"""Default longest accepted line, the DogStatsD agent's default datagram buffer."""

MAX_TIMESTAMP_DIGITS: Final = 12
"""``|T`` takes at most this many digits of unix seconds (beyond the year 30000)."""

TYPE_KINDS: Final[dict[bytes, Kind]] = {
    b"c": "counter",
    b"g": "gauge",
    b"s": "distinct",
    b"ms": "distribution",
    b"h": "distribution",
    b"d": "distribution",
}

_NUMBER: Final = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_EXTENSION: Final = re.compile(rb"[a-z][^:]*:.*", re.DOTALL)
# Bytes that may not appear in a name or a tag: space, control characters and DEL. '#' is also
# refused in names because it separates the name from the tags in a canonical key.
_FORBIDDEN_TAG_BYTES: Final = frozenset([*range(0x21), 0x7F])
_FORBIDDEN_NAME_BYTES: Final = _FORBIDDEN_TAG_BYTES | {ord("#")}
# DogStatsD events (``_e{title_len,text_len}:title|text|...``) and service checks
# (``_sc|name|status|...``) are not metrics; they get a reason of their own.
_EVENT_PREFIXES: Final = (b"_e{", b"_sc|")


class LineRejectedError(DecodeError):
    """A statsd line fails a check; ``reason`` is one of
    :data:`~crdtstream.ingest.batch.REASONS`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ParsedLine:
    """One accepted line: its kind, canonical key and rows (one per packed value).

    ``values`` are floats, or the raw member bytes for ``distinct``; ``relative`` flags gauge
    adjustments; ``weight`` applies to every row of the line.
    """

    kind: Kind
    key: str
    values: list[float] | list[bytes]
    relative: list[bool]
    timestamp_ms: int
    weight: float


def canonical_key(name: bytes, tags: bytes | None) -> str:
    """``name`` plus its sorted, de-duplicated tags: ``b"api.hits", b"region:eu,env:prod"``
    gives ``"api.hits#env:prod,region:eu"``. ``tags`` is None when the line has no ``|#`` field.

    Raises :class:`LineRejectedError` for an empty or malformed name or tag (name checked first).
    """
    name_text = canonical_name(name)
    if tags is None:
        return name_text
    return name_text + "#" + canonical_tags(tags)


def canonical_name(name: bytes) -> str:
    """The metric name as text; raises :class:`LineRejectedError` if empty or malformed."""
    if name.startswith(_EVENT_PREFIXES[0]):
        # Only reached by the vectorised parser, for an event that looks like a metric line.
        raise LineRejectedError("unsupported_event")
    if not name:
        raise LineRejectedError("empty_name")
    if not _FORBIDDEN_NAME_BYTES.isdisjoint(name):
        raise LineRejectedError("bad_name")
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        raise LineRejectedError("non_utf8_name") from None


def canonical_tags(tags: bytes) -> str:
    """The text of a ``|#`` field, tags sorted and de-duplicated; raises
    :class:`LineRejectedError` for an empty tag, a space or control byte, or non-UTF-8 bytes."""
    parts = tags.split(b",")
    for part in parts:
        if not part or not _FORBIDDEN_TAG_BYTES.isdisjoint(part):
            raise LineRejectedError("bad_tag")
    try:
        text = tags.decode("utf-8")
    except UnicodeDecodeError:
        raise LineRejectedError("non_utf8_tag") from None
    return ",".join(sorted(set(text.split(","))))


def number_or_none(text: bytes) -> float | None:
    """The value of one statsd number (sign, digits, dot, exponent; finite), else None."""
    if _NUMBER.fullmatch(text) is None:
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _parse_number(text: bytes) -> float:
    if not text:
        raise LineRejectedError("missing_value")
    value = number_or_none(text)
    if value is None:
        raise LineRejectedError("bad_number")
    return value


def _parse_rate(text: bytes) -> float:
    if _NUMBER.fullmatch(text) is None:
        raise LineRejectedError("bad_rate")
    rate = float(text)
    if not 0.0 < rate <= 1.0:
        raise LineRejectedError("rate_out_of_range")
    return rate


def _parse_timestamp_ms(text: bytes) -> int:
    if not (0 < len(text) <= MAX_TIMESTAMP_DIGITS and text.isdigit()):
        raise LineRejectedError("bad_timestamp")
    return int(text) * 1000


def _sort_fields(fields: Sequence[bytes]) -> dict[int, bytes]:
    """The optional fields by their first byte (``@``, ``#``, ``T``); extensions are dropped."""
    found: dict[int, bytes] = {}
    for field in fields:
        if not field:
            raise LineRejectedError("empty_field")
        marker = field[0]
        if marker in b"@#T":
            if marker in found:
                raise LineRejectedError("duplicate_field")
            found[marker] = field[1:]
        elif _EXTENSION.fullmatch(field) is None:
            raise LineRejectedError("unknown_field")
    return found


def _split_head(fields: list[bytes]) -> tuple[bytes, bytes, Kind]:
    head = fields[0]
    colon = head.find(b":")
    if colon < 0:
        raise LineRejectedError("missing_value")
    if len(fields) < 2 or not fields[1]:
        raise LineRejectedError("missing_type")
    kind = TYPE_KINDS.get(fields[1])
    if kind is None:
        raise LineRejectedError("unknown_type")
    return head[:colon], head[colon + 1 :], kind


def _values(kind: Kind, text: bytes) -> tuple[list[float] | list[bytes], list[bool]]:
    if kind == "distinct":
        # Sets are never packed: a member may contain ':'.
        if not text:
            raise LineRejectedError("missing_value")
        return [text], [False]
    parts = text.split(b":")
    values = [_parse_number(part) for part in parts]
    if kind == "gauge":
        return values, [part[:1] in (b"+", b"-") for part in parts]
    return values, [False] * len(values)


def parse_line(line: bytes, now_ms: int, max_line_bytes: int = MAX_LINE_BYTES) -> ParsedLine:
    """Parse one non-empty line; raise :class:`LineRejectedError` naming the first failed check."""
    if len(line) > max_line_bytes:
        raise LineRejectedError("oversize_line")
    if line.startswith(_EVENT_PREFIXES):
        raise LineRejectedError("unsupported_event")
    fields = line.split(b"|")
    name, value_text, kind = _split_head(fields)
    optional = _sort_fields(fields[2:])
    rate = _parse_rate(optional[0x40]) if 0x40 in optional else 1.0
    timestamp_ms = _parse_timestamp_ms(optional[0x54]) if 0x54 in optional else now_ms
    key = canonical_key(name, optional.get(0x23))
    values, relative = _values(kind, value_text)
    weight = 1.0
    if kind == "counter":
        scale = 1.0 / rate
        values = [value * scale for value in values]  # type: ignore[operator]
    elif kind == "distribution":
        weight = 1.0 / rate
    return ParsedLine(kind, key, values, relative, timestamp_ms, weight)


def split_lines(datagrams: bytes | Sequence[bytes]) -> list[bytes]:
    """The non-empty lines of one datagram or of a batch of datagrams."""
    if isinstance(datagrams, (bytes, bytearray, memoryview)):
        datagrams = [bytes(datagrams)]
    return [line for datagram in datagrams for line in datagram.split(b"\n") if line]


class _Rows:
    """Rows of one kind gathered line by line, turned into a :class:`KindBatch` at the end."""

    def __init__(self) -> None:
        self.key_ids: dict[str, int] = {}
        self.key_index: list[int] = []
        self.values: list[float] | list[bytes] = []
        self.timestamps_ms: list[int] = []
        self.weights: list[float] = []
        self.relative: list[bool] = []

    def add(self, parsed: ParsedLine) -> None:
        count = len(parsed.values)
        key_id = self.key_ids.setdefault(parsed.key, len(self.key_ids))
        self.key_index.extend([key_id] * count)
        self.values.extend(parsed.values)  # type: ignore[arg-type]
        self.timestamps_ms.extend([parsed.timestamp_ms] * count)
        self.weights.extend([parsed.weight] * count)
        self.relative.extend(parsed.relative)

    def batch(self, kind: Kind) -> KindBatch:
        if kind == "distinct":
            values = hash64_many(self.values)  # type: ignore[arg-type]
        else:
            values = np.array(self.values, dtype=np.float64)
        return KindBatch(
            key_names=list(self.key_ids),
            key_index=np.array(self.key_index, dtype=np.int64),
            values=values,
            timestamps_ms=np.array(self.timestamps_ms, dtype=np.int64),
            weights=np.array(self.weights, dtype=np.float64),
            relative=np.array(self.relative, dtype=np.bool_),
        )


def parse_reference(
    datagrams: bytes | Sequence[bytes], now_ms: int, *, max_line_bytes: int = MAX_LINE_BYTES
) -> ParseResult:
    """Parse datagrams line by line; same contract as :func:`crdtstream.ingest.statsd.parse`."""
    rows: dict[Kind, _Rows] = {}
    errors: dict[str, int] = {}
    lines_ok = 0
    for line in split_lines(datagrams):
        try:
            parsed = parse_line(line, now_ms, max_line_bytes)
        except LineRejectedError as rejected:
            errors[rejected.reason] = errors.get(rejected.reason, 0) + 1
            continue
        lines_ok += 1
        rows.setdefault(parsed.kind, _Rows()).add(parsed)
    batches = {kind: kind_rows.batch(kind) for kind, kind_rows in rows.items()}
    return ParseResult(batches, errors, lines_ok, sum(errors.values()))
