"""Vectorised structure of statsd lines: line bounds, the name/value/type split and the optional
fields, found with a handful of whole-buffer numpy searches instead of a loop over lines.

A line is marked *simple* only when its structure is certainly valid and plain: printable ASCII,
``name:values|type`` with a known type, and optional fields that are each one of ``@rate``,
``#tags``, ``T<seconds>`` (at most once) or an ignored ``ext:...`` extension. Everything else is
left for the exact per-line parser, which also names the reason of any rejection.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = ["FIELD_RATE", "FIELD_TAGS", "FIELD_TIME", "Layout", "scan"]

Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_NEWLINE, _PIPE, _COLON = 10, 124, 58
FIELD_RATE, FIELD_TAGS, FIELD_TIME = 0, 1, 2
_FIELD_EXTENSION, _FIELD_BAD = 3, 4
_MARKERS: Final = {ord("@"): FIELD_RATE, ord("#"): FIELD_TAGS, ord("T"): FIELD_TIME}
_NO_KIND: Final = -1


def _type_table() -> npt.NDArray[np.int8]:
    """Kind index (position in ``KINDS``) of every one-byte type; ``ms`` is handled apart."""
    table = np.full(256, _NO_KIND, dtype=np.int8)
    for letter, kind in ((b"c", 0), (b"g", 1), (b"s", 2), (b"h", 3), (b"d", 3)):
        table[letter[0]] = kind
    return table


_ONE_BYTE_TYPES: Final = _type_table()


class Layout(NamedTuple):
    """Per-line positions in the buffer (absolute byte offsets; ``-1`` where absent)."""

    starts: Int64Array
    ends: Int64Array
    simple: BoolArray
    kind: npt.NDArray[np.int8]
    name_end: Int64Array
    value_end: Int64Array
    field_starts: Int64Array  # (lines, 3): start of the rate, tags and time text, after the marker
    field_ends: Int64Array
    colons: Int64Array  # every ':' in the buffer, for splitting packed values
    first_colon: Int64Array  # index into ``colons`` of each line's first ':'


def _count_between(
    positions: Int64Array, starts: Int64Array, ends: Int64Array
) -> tuple[Int64Array, Int64Array]:
    """For sorted ``positions``: index of the first one at or after each start, and how many
    fall in ``[start, end)``."""
    first = np.searchsorted(positions, starts)
    return first, np.searchsorted(positions, ends) - first


def _take(positions: Int64Array, index: Int64Array, missing: int) -> Int64Array:
    if positions.shape[0] == 0:
        return np.full(index.shape[0], missing, dtype=np.int64)
    return np.where(
        index < positions.shape[0], positions[np.minimum(index, positions.shape[0] - 1)], missing
    )


def line_bounds(buffer: npt.NDArray[np.uint8]) -> tuple[Int64Array, Int64Array]:
    """Start and end offsets of the non-empty lines; ``buffer`` must end with a newline."""
    ends = np.flatnonzero(buffer == _NEWLINE)
    starts = np.empty_like(ends)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    keep = ends > starts
    return starts[keep], ends[keep]


def scan(buffer: npt.NDArray[np.uint8], max_line_bytes: int) -> Layout:
    """Find the structure of every line of ``buffer`` (which ends with a newline)."""
    starts, ends = line_bounds(buffer)
    odd = np.flatnonzero((buffer - np.uint8(0x21)) > np.uint8(0x7E - 0x21))
    odd = odd[buffer[odd] != _NEWLINE]
    pipes = np.flatnonzero(buffer == _PIPE)
    colons = np.flatnonzero(buffer == _COLON)
    first_pipe, pipe_count = _count_between(pipes, starts, ends)
    first_colon, _ = _count_between(colons, starts, ends)
    value_end = _take(pipes, first_pipe, -1)
    name_end = _take(colons, first_colon, -1)
    type_end = np.where(pipe_count >= 2, _take(pipes, first_pipe + 1, -1), ends)
    simple = (
        (ends - starts <= max_line_bytes)
        & (_count_between(odd, starts, ends)[1] == 0)
        & (pipe_count >= 1)
        & (name_end >= starts)
        & (name_end < value_end)
    )
    kind = _kind(buffer, value_end + 1, type_end)
    simple &= kind != _NO_KIND
    field_starts, field_ends, fields_ok = _optional_fields(
        buffer, pipes, colons, starts, ends, first_pipe
    )
    simple &= fields_ok
    return Layout(
        starts,
        ends,
        simple,
        kind,
        name_end,
        value_end,
        field_starts,
        field_ends,
        colons,
        first_colon,
    )


def _kind(
    buffer: npt.NDArray[np.uint8], type_starts: Int64Array, type_ends: Int64Array
) -> npt.NDArray[np.int8]:
    last = buffer.shape[0] - 1
    first_byte = buffer[np.minimum(type_starts, last)]
    second_byte = buffer[np.minimum(type_starts + 1, last)]
    length = type_ends - type_starts
    kind = np.where(length == 1, _ONE_BYTE_TYPES[first_byte], _NO_KIND).astype(np.int8)
    is_timer = (length == 2) & (first_byte == ord("m")) & (second_byte == ord("s"))
    kind[is_timer] = 3
    return kind


def _optional_fields(
    buffer: npt.NDArray[np.uint8],
    pipes: Int64Array,
    colons: Int64Array,
    starts: Int64Array,
    ends: Int64Array,
    first_pipe: Int64Array,
) -> tuple[Int64Array, Int64Array, BoolArray]:
    """Bounds of each line's rate, tags and time text, and whether its optional fields are
    all well-formed (known marker or extension, none empty, none repeated)."""
    line_count = starts.shape[0]
    field_starts = np.full((line_count, 3), -1, dtype=np.int64)
    field_ends = np.full((line_count, 3), -1, dtype=np.int64)
    ok = np.ones(line_count, dtype=np.bool_)
    if pipes.shape[0] == 0 or line_count == 0:
        return field_starts, field_ends, ok
    line = np.searchsorted(ends, pipes)
    rank = np.arange(pipes.shape[0]) - first_pipe[line]
    same_line_next = np.zeros(pipes.shape[0], dtype=np.bool_)
    same_line_next[:-1] = line[1:] == line[:-1]
    next_pipe = np.empty_like(pipes)
    next_pipe[:-1] = pipes[1:]
    field_end = np.where(same_line_next, next_pipe, ends[line])
    # Each pipe opens the field after it; the first pipe of a line opens the type field.
    opened_by = np.flatnonzero(rank >= 1)
    start = pipes[opened_by] + 1
    end = field_end[opened_by]
    field_line = line[opened_by]
    kind = _field_kind(buffer, colons, start, end)
    ok[field_line[kind == _FIELD_BAD]] = False
    known = kind <= FIELD_TIME
    counts = np.bincount(field_line[known] * 3 + kind[known], minlength=3 * line_count)
    ok &= (counts.reshape(line_count, 3) <= 1).all(axis=1)
    field_starts[field_line[known], kind[known]] = start[known] + 1
    field_ends[field_line[known], kind[known]] = end[known]
    return field_starts, field_ends, ok


def _field_kind(
    buffer: npt.NDArray[np.uint8], colons: Int64Array, start: Int64Array, end: Int64Array
) -> Int64Array:
    marker = buffer[start]
    kind = np.full(start.shape[0], _FIELD_BAD, dtype=np.int64)
    for byte, field in _MARKERS.items():
        kind[marker == byte] = field
    has_colon = _count_between(colons, start, end)[1] > 0
    lowercase = (marker >= ord("a")) & (marker <= ord("z"))
    kind[lowercase & has_colon] = _FIELD_EXTENSION
    kind[end <= start] = _FIELD_BAD
    return kind
