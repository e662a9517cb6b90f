"""The first stage of the vectorised parser: every line's structure, numbers and key segments.

Two scanners give the same :class:`Front` for a buffer of lines:

- the compiled one (``_cscan``, built from ``_cscan.c`` when a C compiler is present at install
  time): one pass in C over the bytes, names and tag lists grouped by a hash table that
  compares bytes;
- the numpy one: whole-buffer searches (:mod:`~crdtstream.ingest._scan`), vectorised decimals
  (:mod:`~crdtstream.ingest._numbers`) and hashed interning checked byte for byte
  (:mod:`~crdtstream.ingest._intern`).

Both mark a line *simple* under the same rules, and everything after the front (rare values,
canonical keys, the per-line fallback, assembly) is shared. The numpy scanner is the portable
one and the tests' second opinion on the compiled one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from crdtstream.crdt.hashing import hash64_many
from crdtstream.ingest._intern import SegmentInterner
from crdtstream.ingest._numbers import gather, parse_decimals
from crdtstream.ingest._scan import FIELD_RATE, FIELD_TAGS, FIELD_TIME, Layout, scan
from crdtstream.ingest.batch import KINDS
from crdtstream.ingest.statsd_reference import MAX_TIMESTAMP_DIGITS

_CompiledScan = Callable[[bytes, int, int, int, int], tuple[bytes, ...]]


def _load_compiled_scan() -> _CompiledScan | None:
    """``scan`` of the compiled module, None when the package was built without a C compiler.
    Imported by name: static import analysis cannot see into an extension module."""
    try:
        module = importlib.import_module("crdtstream.ingest._cscan")
    except ImportError:
        return None
    scan_function: _CompiledScan = module.scan
    return scan_function


_compiled_scan = _load_compiled_scan()

SCAN_SEED: Final = hash(b"crdtstream.ingest._cscan") & ((1 << 64) - 1)
"""The key of the compiled scanner's grouping hash: secret per process (it comes from Python's
own hash secret, so ``PYTHONHASHSEED`` fixes it for a reproducible run), so that names cannot be
crafted to collide."""

__all__ = [
    "COMPILED",
    "MAX_VECTOR_MEMBER_BYTES",
    "SCAN_SEED",
    "Front",
    "Rows",
    "Scanner",
    "Segments",
    "compiled_front",
    "numpy_front",
]

Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Scanner = Literal["auto", "compiled", "numpy"]

COMPILED: Final = _compiled_scan is not None
"""Whether the compiled scanner was built with the package."""

_DISTINCT = KINDS.index("distinct")
_MIN_MEMBER_WIDTH = 16
MAX_VECTOR_MEMBER_BYTES: Final = 256
"""A longer set member takes the per-line path (the members of a batch are hashed as one
fixed-width matrix, which one long member would widen for all)."""


@dataclass(slots=True)
class Rows:
    """Value rows of simple lines, in line order (packed values left to right); ``exact``:
    the value was read by the fast rule (the others are settled one by one). Set-member rows
    carry ``hashes``, the :func:`~crdtstream.crdt.hashing.hash64` of each member's bytes."""

    line: Int64Array
    start: Int64Array
    end: Int64Array
    value: npt.NDArray[np.float64]
    signed: BoolArray
    exact: BoolArray
    hashes: npt.NDArray[np.uint64] | None = None


@dataclass(slots=True)
class Segments:
    """Byte segments (names, or tag lists) grouped by their bytes: ``group[line]`` numbers the
    line's segment (-1: none), ``starts``/``ends`` give one representative per group, and
    ``collided[line]`` marks a line whose segment hashed like a different one (it must take the
    exact path)."""

    group: Int64Array
    starts: Int64Array
    ends: Int64Array
    collided: BoolArray


@dataclass(slots=True)
class Front:
    """What the scanners find, per line of the buffer (``simple`` is the caller's to narrow)."""

    starts: Int64Array
    ends: Int64Array
    simple: BoolArray
    kind: npt.NDArray[np.int8]
    rate: npt.NDArray[np.float64]
    timestamp_ms: Int64Array
    numeric: Rows
    members: Rows
    names: Segments
    tags: Segments


def compiled_front(
    data: bytes, max_line_bytes: int, now_ms: int, *, seed: int = SCAN_SEED
) -> Front:
    """The :class:`Front` of ``data`` (ending with a newline) by the compiled scanner, its
    grouping hash keyed with ``seed``."""
    if _compiled_scan is None:
        raise RuntimeError("crdtstream was installed without its compiled scanner")
    (
        starts,
        ends,
        simple,
        kind,
        rate,
        timestamp_ms,
        name_group,
        tags_group,
        value_start,
        value_end,
        member_hash,
        row_line,
        row_start,
        row_end,
        row_value,
        row_signed,
        row_exact,
        name_starts,
        name_ends,
        tags_starts,
        tags_ends,
    ) = _compiled_scan(data, max_line_bytes, now_ms, MAX_VECTOR_MEMBER_BYTES, seed)
    i64, f64 = np.int64, np.float64
    line_count = len(starts) // 8
    simple_lines = np.frombuffer(simple, dtype=np.bool_).copy()
    kinds = np.frombuffer(kind, dtype=np.int8)
    members = np.flatnonzero(simple_lines & (kinds == _DISTINCT))
    no_values = np.zeros(members.shape[0])
    return Front(
        starts=np.frombuffer(starts, dtype=i64),
        ends=np.frombuffer(ends, dtype=i64),
        simple=simple_lines,
        kind=kinds,
        rate=np.frombuffer(rate, dtype=f64),
        timestamp_ms=np.frombuffer(timestamp_ms, dtype=i64),
        numeric=Rows(
            np.frombuffer(row_line, dtype=i64),
            np.frombuffer(row_start, dtype=i64),
            np.frombuffer(row_end, dtype=i64),
            np.frombuffer(row_value, dtype=f64).copy(),
            np.frombuffer(row_signed, dtype=np.bool_).copy(),
            np.frombuffer(row_exact, dtype=np.bool_).copy(),
        ),
        members=Rows(
            members,
            np.frombuffer(value_start, dtype=i64)[members],
            np.frombuffer(value_end, dtype=i64)[members],
            no_values,
            no_values.astype(np.bool_),
            np.ones(members.shape[0], dtype=np.bool_),
            np.frombuffer(member_hash, dtype=np.uint64)[members],
        ),
        names=Segments(
            np.frombuffer(name_group, dtype=i64),
            np.frombuffer(name_starts, dtype=i64),
            np.frombuffer(name_ends, dtype=i64),
            np.zeros(line_count, dtype=np.bool_),
        ),
        tags=Segments(
            np.frombuffer(tags_group, dtype=i64),
            np.frombuffer(tags_starts, dtype=i64),
            np.frombuffer(tags_ends, dtype=i64),
            np.zeros(line_count, dtype=np.bool_),
        ),
    )


def numpy_front(data: bytes, max_line_bytes: int, now_ms: int) -> Front:
    """The :class:`Front` of ``data`` (ending with a newline) by the numpy scanner."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    layout = scan(buffer, max_line_bytes)
    simple = layout.simple.copy()
    rate = _rates(buffer, layout, simple)
    timestamp_ms = _timestamps(buffer, layout, simple, now_ms)
    numeric, members = _value_rows(buffer, layout, simple)
    # Only lines still simple have their key segments grouped.
    lines = np.flatnonzero(simple)
    interner = SegmentInterner(data)
    names = _segments(interner, lines, layout.starts[lines], layout.name_end[lines], simple.shape)
    tag_starts = layout.field_starts[lines, FIELD_TAGS]
    tagged = np.flatnonzero(tag_starts >= 0)
    tags = _segments(
        interner,
        lines[tagged],
        tag_starts[tagged],
        layout.field_ends[lines[tagged], FIELD_TAGS],
        simple.shape,
    )
    return Front(
        layout.starts,
        layout.ends,
        simple,
        layout.kind,
        rate,
        timestamp_ms,
        numeric,
        members,
        names,
        tags,
    )


def _segments(
    interner: SegmentInterner,
    lines: Int64Array,
    starts: Int64Array,
    ends: Int64Array,
    shape: tuple[int, ...],
) -> Segments:
    interned = interner.intern(starts, ends)
    group = np.full(shape, -1, dtype=np.int64)
    group[lines] = interned.inverse
    collided = np.zeros(shape, dtype=np.bool_)
    collided[lines] = interned.collided
    representatives = interned.representatives
    return Segments(group, starts[representatives], ends[representatives], collided)


def _rates(
    buffer: npt.NDArray[np.uint8], layout: Layout, simple: BoolArray
) -> npt.NDArray[np.float64]:
    """Each line's sample rate (1 without ``@``); a rate that is not a plain decimal in
    (0, 1] makes its line not simple."""
    rate = np.ones(simple.shape[0], dtype=np.float64)
    lines = np.flatnonzero(simple & (layout.field_starts[:, FIELD_RATE] >= 0))
    if lines.shape[0]:
        parsed = parse_decimals(
            buffer, layout.field_starts[lines, FIELD_RATE], layout.field_ends[lines, FIELD_RATE]
        )
        simple[lines] &= parsed.simple & (parsed.value > 0.0) & (parsed.value <= 1.0)
        rate[lines] = parsed.value
    return rate


def _timestamps(
    buffer: npt.NDArray[np.uint8], layout: Layout, simple: BoolArray, now_ms: int
) -> Int64Array:
    """Each line's event time: ``|T`` seconds times 1000, else ``now_ms``."""
    timestamp_ms = np.full(simple.shape[0], now_ms, dtype=np.int64)
    lines = np.flatnonzero(simple & (layout.field_starts[:, FIELD_TIME] >= 0))
    if lines.shape[0]:
        starts = layout.field_starts[lines, FIELD_TIME]
        ends = layout.field_ends[lines, FIELD_TIME]
        parsed = parse_decimals(buffer, starts, ends, allow_sign=False, allow_dot=False)
        simple[lines] &= parsed.simple & (ends - starts <= MAX_TIMESTAMP_DIGITS)
        seconds = np.where(parsed.simple, parsed.value, 0.0).astype(np.int64)
        timestamp_ms[lines] = seconds * 1000
    return timestamp_ms


def _value_rows(
    buffer: npt.NDArray[np.uint8], layout: Layout, simple: BoolArray
) -> tuple[Rows, Rows]:
    """The numeric rows of simple lines (packed ``a:b:c`` gives three) and their set-member
    rows. A member that is empty or too long makes its line not simple."""
    colons = layout.colons
    lines = np.flatnonzero(simple & (layout.kind != _DISTINCT))
    value_end = layout.value_end[lines]
    first = layout.first_colon[lines]
    count = np.searchsorted(colons, value_end) - first
    row_line = np.repeat(lines, count)
    offset = np.arange(row_line.shape[0]) - np.repeat(np.cumsum(count) - count, count)
    colon_index = np.repeat(first, count) + offset
    start = colons[colon_index] + 1
    next_colon = colons[np.minimum(colon_index + 1, colons.shape[0] - 1)]
    end = np.where(offset == np.repeat(count - 1, count), np.repeat(value_end, count), next_colon)
    parsed = parse_decimals(buffer, start, end)
    members = np.flatnonzero(simple & (layout.kind == _DISTINCT))
    member_start = layout.name_end[members] + 1
    member_end = layout.value_end[members]
    member_bytes = member_end - member_start
    simple[members[(member_bytes <= 0) | (member_bytes > MAX_VECTOR_MEMBER_BYTES)]] = False
    kept = simple[members]
    hashes = np.zeros(members.shape[0], dtype=np.uint64)
    hashes[kept] = _hash_members(buffer, member_start[kept], member_end[kept])
    no_values = np.zeros(members.shape[0])
    return (
        Rows(row_line, start, end, parsed.value, parsed.signed, parsed.simple),
        Rows(
            members,
            member_start,
            member_end,
            no_values,
            no_values.astype(np.bool_),
            np.ones(members.shape[0], dtype=np.bool_),
            hashes,
        ),
    )


def _hash_members(
    buffer: npt.NDArray[np.uint8], starts: Int64Array, ends: Int64Array
) -> npt.NDArray[np.uint64]:
    """``hash64_many`` of the member bytes, fed as one fixed-width ``S`` array."""
    if starts.shape[0] == 0:
        return np.zeros(0, dtype=np.uint64)
    lengths = ends - starts
    width = max(_MIN_MEMBER_WIDTH, int(lengths.max()))
    chars = gather(buffer, starts, width)
    chars[np.arange(width) >= lengths[:, None]] = 0
    return hash64_many(chars.view(f"S{width}").reshape(-1))
