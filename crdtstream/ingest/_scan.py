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


def _take(positions: Int64Array, index: Int64Array, missing: int) -> Int64Array:
    if positions.shape[0] == 0:
        return np.full(index.shape[0], missing, dtype=np.int64)
    return np.where(
        index < positions.shape[0], positions[np.minimum(index, positions.shape[0] - 1)], missing
    )


def _specials(
    buffer: npt.NDArray[np.uint8],
) -> tuple[Int64Array, Int64Array, Int64Array, Int64Array]:
    """Positions of newlines, pipes, colons and odd bytes (space, control, DEL, non-ASCII), found
    in one pass: a single ``flatnonzero`` over the buffer, then a split of the few hits."""
    odd_or_newline = (buffer - np.uint8(0x21)) > np.uint8(0x7E - 0x21)
    special = odd_or_newline | (buffer == _PIPE) | (buffer == _COLON)
    positions = np.flatnonzero(special)
    found = buffer[positions]
    newline = found == _NEWLINE
    pipe = found == _PIPE
    colon = found == _COLON
    odd = ~(newline | pipe | colon)
    return positions[newline], positions[pipe], positions[colon], positions[odd]


def line_bounds(newlines: Int64Array) -> tuple[Int64Array, Int64Array]:
    """Start and end offsets of the non-empty lines, from the newline positions (the buffer
    ends with a newline)."""
    starts = np.empty_like(newlines)
    starts[:1] = 0
    starts[1:] = newlines[:-1] + 1
    keep = newlines > starts
    return starts[keep], newlines[keep]


def scan(buffer: npt.NDArray[np.uint8], max_line_bytes: int) -> Layout:
    """Find the structure of every line of ``buffer`` (which ends with a newline)."""
    newlines, pipes, colons, odd = _specials(buffer)
    starts, ends = line_bounds(newlines)
    first_pipe = np.searchsorted(pipes, starts)
    first_colon = np.searchsorted(colons, starts)
    value_end = _take(pipes, first_pipe, -1)
    name_end = _take(colons, first_colon, -1)
    second_pipe = _take(pipes, first_pipe + 1, -1)
    has_pipe = (value_end >= 0) & (value_end < ends)
    type_end = np.where((second_pipe >= 0) & (second_pipe < ends), second_pipe, ends)
    simple = (
        (ends - starts <= max_line_bytes) & has_pipe & (name_end >= starts) & (name_end < value_end)
    )
    if odd.shape[0]:
        simple &= np.searchsorted(odd, starts) == np.searchsorted(odd, ends)
    kind = _kind(buffer, value_end + 1, type_end)
    simple &= kind != _NO_KIND
    field_starts, field_ends, fields_ok = _optional_fields(buffer, pipes, colons, ends, first_pipe)
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
    ends: Int64Array,
    first_pipe: Int64Array,
) -> tuple[Int64Array, Int64Array, BoolArray]:
    """Bounds of each line's rate, tags and time text, and whether its optional fields are
    all well-formed (known marker or extension, none empty, none repeated)."""
    line_count = ends.shape[0]
    field_starts = np.full((line_count, 3), -1, dtype=np.int64)
    field_ends = np.full((line_count, 3), -1, dtype=np.int64)
    ok = np.ones(line_count, dtype=np.bool_)
    if pipes.shape[0] == 0 or line_count == 0:
        return field_starts, field_ends, ok
    line = np.searchsorted(ends, pipes)
    # Each pipe opens the field after it; the first pipe of a line opens the type field.
    opened_by = np.flatnonzero(np.arange(pipes.shape[0]) > first_pipe[line])
    line = line[opened_by]
    start = pipes[opened_by] + 1
    following = np.minimum(opened_by + 1, pipes.shape[0] - 1)
    end = np.where(pipes[following] < ends[line], pipes[following], ends[line])
    end[opened_by == pipes.shape[0] - 1] = ends[line[opened_by == pipes.shape[0] - 1]]
    kind = _field_kind(buffer, colons, start, end)
    ok[line[kind == _FIELD_BAD]] = False
    known = kind <= FIELD_TIME
    counts = np.bincount(line[known] * 3 + kind[known], minlength=3 * line_count)
    ok[np.flatnonzero(counts > 1) // 3] = False
    field_starts[line[known], kind[known]] = start[known] + 1
    field_ends[line[known], kind[known]] = end[known]
    return field_starts, field_ends, ok


def _marker_table() -> npt.NDArray[np.int64]:
    """Field kind by first byte: the three markers, lowercase (an extension if it holds a
    colon), anything else bad."""
    table = np.full(256, _FIELD_BAD, dtype=np.int64)
    table[ord("a") : ord("z") + 1] = _FIELD_EXTENSION
    for byte, field in _MARKERS.items():
        table[byte] = field
    return table


_MARKER_KINDS: Final = _marker_table()


def _field_kind(
    buffer: npt.NDArray[np.uint8], colons: Int64Array, start: Int64Array, end: Int64Array
) -> Int64Array:
    kind = _MARKER_KINDS[buffer[start]]
    kind[end <= start] = _FIELD_BAD
    extension = np.flatnonzero(kind == _FIELD_EXTENSION)
    if extension.shape[0]:
        without_colon = np.searchsorted(colons, start[extension]) == np.searchsorted(
            colons, end[extension]
        )
        kind[extension[without_colon]] = _FIELD_BAD
    return kind
