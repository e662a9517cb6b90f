"""The vectorised statsd / DogStatsD parser: a whole batch of datagrams in a few numpy passes.

``parse(datagrams, now_ms)`` returns a :class:`~crdtstream.ingest.batch.ParseResult` equal to
the one of the per-line oracle :func:`~crdtstream.ingest.statsd_reference.parse_reference`: the
same rows in the same order, the same error counts. How it gets there:

1. :func:`~crdtstream.ingest._scan.scan` finds line bounds, the name/value/type split and the
   optional fields of every line with whole-buffer searches, and marks the *simple* lines.
2. Numbers (values, rates, ``|T`` seconds) of simple lines are parsed vectorised where that is
   provably exact (:mod:`~crdtstream.ingest._numbers`).
3. Keys are interned by a hash of their name and tag bytes, checked byte for byte, so only each
   distinct raw key is canonicalised (tags sorted) in Python, not each line.
4. Every line that is not simple (rare forms such as exponents, non-ASCII names, and all
   malformed lines) goes through the exact per-line parser, which names rejection reasons.

Pure: no clock (``now_ms`` is an argument), no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from crdtstream.crdt.hashing import hash64_many
from crdtstream.ingest._intern import SegmentInterner, group_rows
from crdtstream.ingest._numbers import MAX_DIGITS, gather, parse_decimals
from crdtstream.ingest._scan import FIELD_RATE, FIELD_TAGS, FIELD_TIME, Layout, scan
from crdtstream.ingest.batch import (
    KINDS,
    REASONS,
    Kind,
    KindBatch,
    ParseResult,
    dense_index,
)
from crdtstream.ingest.statsd_reference import (
    MAX_LINE_BYTES,
    MAX_TIMESTAMP_DIGITS,
    LineRejectedError,
    ParsedLine,
    canonical_name,
    canonical_tags,
    parse_line,
)

__all__ = ["parse"]

Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
_DISTINCT = KINDS.index("distinct")
_REASON_CODES = {reason: code for code, reason in enumerate(REASONS)}


@dataclass(slots=True)
class _Lines:
    """Per-line facts gathered by the vectorised passes."""

    layout: Layout
    accepted: BoolArray  # simple lines whose key is valid
    rate: npt.NDArray[np.float64]
    timestamp_ms: Int64Array
    key_id: Int64Array  # index into the key table, -1 when the key was rejected


@dataclass(slots=True)
class _Rows:
    """Value rows of the simple lines, in line order (packed values left to right)."""

    line: Int64Array
    start: Int64Array
    end: Int64Array
    value: npt.NDArray[np.float64]
    signed: BoolArray


def _join(datagrams: bytes | bytearray | memoryview | Sequence[bytes]) -> bytes:
    if isinstance(datagrams, (bytes, bytearray, memoryview)):
        return bytes(datagrams) + b"\n"
    return b"\n".join(datagrams) + b"\n"


def parse(
    datagrams: bytes | Sequence[bytes], now_ms: int, *, max_line_bytes: int = MAX_LINE_BYTES
) -> ParseResult:
    """Parse one datagram or a batch of datagrams of newline-separated statsd lines.

    Lines without ``|T`` get ``now_ms`` as their event time. Malformed lines are skipped and
    counted in ``errors`` by reason; the other lines of the datagram are kept.
    """
    data = _join(datagrams)
    buffer = np.frombuffer(data, dtype=np.uint8)
    layout = scan(buffer, max_line_bytes)
    simple = layout.simple.copy()
    rate = _rates(buffer, layout, simple)
    timestamp_ms = _timestamps(buffer, layout, simple, now_ms)
    numeric_rows, member_rows = _value_rows(buffer, layout, simple)
    key_names: list[str] = []
    errors: dict[str, int] = {}
    key_id = _intern_keys(data, buffer, layout, simple, key_names, errors)
    lines = _Lines(layout, simple & (key_id >= 0), rate, timestamp_ms, key_id)
    fallback = _parse_fallback(data, layout, simple, now_ms, max_line_bytes, errors)
    key_table = {name: index for index, name in enumerate(key_names)} if fallback else {}
    for parsed in fallback.values():
        key_table.setdefault(parsed.key, len(key_table))
    names = np.array(list(key_table) if fallback else key_names, dtype=object)
    batches: dict[Kind, KindBatch] = {}
    for kind_index, kind in enumerate(KINDS):
        rows = member_rows if kind == "distinct" else numeric_rows
        fast = _fast_columns(buffer, lines, rows, kind_index)
        slow = _fallback_columns(fallback, kind, key_table)
        batch = _kind_batch(fast if slow is None else _ordered(fast, slow), names)
        if batch is not None:
            batches[kind] = batch
    lines_ok = int(np.count_nonzero(lines.accepted)) + len(fallback)
    return ParseResult(batches, errors, lines_ok, sum(errors.values()))


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
) -> tuple[_Rows, _Rows]:
    """Split and parse the values of simple lines: numeric rows (packed ``a:b:c`` gives three)
    and set-member rows. Lines with a value that is not a plain decimal stop being simple."""
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
    simple[row_line[~parsed.simple]] = False
    members = np.flatnonzero(simple & (layout.kind == _DISTINCT))
    member_start = layout.name_end[members] + 1
    member_end = layout.value_end[members]
    simple[members[member_end <= member_start]] = False
    no_values = np.zeros(members.shape[0])
    return (
        _Rows(row_line, start, end, parsed.value, parsed.signed),
        _Rows(members, member_start, member_end, no_values, no_values.astype(np.bool_)),
    )


def _intern_keys(
    data: bytes,
    buffer: npt.NDArray[np.uint8],
    layout: Layout,
    simple: BoolArray,
    key_names: list[str],
    errors: dict[str, int],
) -> Int64Array:
    """Index into ``key_names`` (which it fills) of every simple line's key: -1 elsewhere, and
    where the name or tags are rejected (those lines are counted in ``errors``). Names and tag
    lists are interned apart and each distinct one is canonicalised once."""
    key_id = np.full(simple.shape[0], -1, dtype=np.int64)
    lines = np.flatnonzero(simple)
    if lines.shape[0] == 0:
        return key_id
    interner = SegmentInterner(data)
    names = _canonical_segments(
        data, interner, layout.starts[lines], layout.name_end[lines], canonical_name
    )
    tag_starts = layout.field_starts[lines, FIELD_TAGS]
    tagged = np.flatnonzero(tag_starts >= 0)
    tags = _canonical_segments(
        data,
        interner,
        tag_starts[tagged],
        layout.field_ends[lines[tagged], FIELD_TAGS],
        canonical_tags,
    )
    collided = names.collided.copy()
    collided[tagged] |= tags.collided
    simple[lines[collided]] = False
    reason = names.reason.copy()
    tags_id = np.zeros(lines.shape[0], dtype=np.int64)
    reason[tagged] = np.where(reason[tagged] >= 0, reason[tagged], tags.reason)
    counted = np.bincount(reason[~collided & (reason >= 0)], minlength=len(REASONS))
    for code in np.flatnonzero(counted).tolist():
        errors[REASONS[code]] = errors.get(REASONS[code], 0) + int(counted[code])
    good = np.flatnonzero(~collided & (reason < 0))
    # Raw tag lists that sort to the same text (``b,a`` and ``a,b``) share one canonical id.
    tag_text_ids: dict[str, int] = {}
    canonical_tag = [tag_text_ids.setdefault(text, len(tag_text_ids)) for text in tags.texts]
    suffixes = np.array(["", *("#" + text for text in tag_text_ids)], dtype=object)
    tags_id[tagged] = np.array(canonical_tag, dtype=np.int64)[tags.inverse] + 1
    pair = names.inverse[good] * suffixes.shape[0] + tags_id[good]
    pair_inverse, pair_rows = group_rows(pair)
    name_of, suffix_of = np.divmod(pair[pair_rows], suffixes.shape[0])
    # One C-level string addition per distinct key, no Python loop over keys.
    key_names.extend((np.array(names.texts, dtype=object)[name_of] + suffixes[suffix_of]).tolist())
    key_id[lines[good]] = pair_inverse
    return key_id


@dataclass(slots=True)
class _Canonical:
    """Distinct segments and their canonical text; per row: which one, why rejected (-1: not)."""

    texts: list[str]
    inverse: Int64Array
    reason: Int64Array
    collided: BoolArray


def _canonical_segments(
    data: bytes,
    interner: SegmentInterner,
    starts: Int64Array,
    ends: Int64Array,
    canonical: Callable[[bytes], str],
) -> _Canonical:
    interned = interner.intern(starts, ends)
    texts: list[str] = []
    reasons: list[int] = []
    for start, end in zip(
        starts[interned.representatives].tolist(),
        ends[interned.representatives].tolist(),
        strict=True,
    ):
        try:
            texts.append(canonical(data[start:end]))
            reasons.append(-1)
        except LineRejectedError as rejected:
            texts.append("")
            reasons.append(_REASON_CODES[rejected.reason])
    reason = np.array(reasons, dtype=np.int64)[interned.inverse]
    return _Canonical(texts, interned.inverse, reason, interned.collided)


def _parse_fallback(
    data: bytes,
    layout: Layout,
    simple: BoolArray,
    now_ms: int,
    max_line_bytes: int,
    errors: dict[str, int],
) -> dict[int, ParsedLine]:
    """Parse every line that is not simple with the exact per-line parser."""
    parsed: dict[int, ParsedLine] = {}
    lines = np.flatnonzero(~simple)
    for line, start, end in zip(
        lines.tolist(), layout.starts[lines].tolist(), layout.ends[lines].tolist(), strict=True
    ):
        try:
            parsed[line] = parse_line(data[start:end], now_ms, max_line_bytes)
        except LineRejectedError as rejected:
            errors[rejected.reason] = errors.get(rejected.reason, 0) + 1
    return parsed


@dataclass(slots=True)
class _Columns:
    """The rows of one kind before key renumbering, with the line each came from."""

    line: Int64Array
    key_id: Int64Array
    values: npt.NDArray[Any]
    timestamps_ms: Int64Array
    weights: npt.NDArray[np.float64]
    relative: BoolArray


def _fast_columns(
    buffer: npt.NDArray[np.uint8], lines: _Lines, rows: _Rows, kind_index: int
) -> _Columns:
    keep = lines.accepted[rows.line] & (lines.layout.kind[rows.line] == kind_index)
    line = rows.line[keep]
    values: npt.NDArray[Any] = rows.value[keep]
    weights = np.ones(line.shape[0], dtype=np.float64)
    kind = KINDS[kind_index]
    if kind == "counter":
        values = values * (1.0 / lines.rate[line])
    elif kind == "distribution":
        weights = 1.0 / lines.rate[line]
    elif kind == "distinct":
        values = _hash_members(buffer, rows.start[keep], rows.end[keep])
    relative = rows.signed[keep] if kind == "gauge" else np.zeros(line.shape[0], dtype=np.bool_)
    return _Columns(line, lines.key_id[line], values, lines.timestamp_ms[line], weights, relative)


def _hash_members(
    buffer: npt.NDArray[np.uint8], starts: Int64Array, ends: Int64Array
) -> npt.NDArray[np.uint64]:
    """``hash64_many`` of the member bytes, fed as one fixed-width ``S`` array."""
    if starts.shape[0] == 0:
        return np.zeros(0, dtype=np.uint64)
    lengths = ends - starts
    width = max(MAX_DIGITS, int(lengths.max()))
    chars = gather(buffer, starts, width)
    chars[np.arange(width) >= lengths[:, None]] = 0
    return hash64_many(chars.view(f"S{width}").reshape(-1))


def _fallback_columns(
    fallback: dict[int, ParsedLine], kind: Kind, key_names: dict[str, int]
) -> _Columns | None:
    chosen = [(line, parsed) for line, parsed in fallback.items() if parsed.kind == kind]
    if not chosen:
        return None
    line: list[int] = []
    key_id: list[int] = []
    values: list[Any] = []
    timestamps_ms: list[int] = []
    weights: list[float] = []
    relative: list[bool] = []
    for line_number, parsed in chosen:
        count = len(parsed.values)
        line.extend([line_number] * count)
        key_id.extend([key_names[parsed.key]] * count)
        values.extend(parsed.values)
        timestamps_ms.extend([parsed.timestamp_ms] * count)
        weights.extend([parsed.weight] * count)
        relative.extend(parsed.relative)
    value_array = hash64_many(values) if kind == "distinct" else np.array(values, np.float64)
    return _Columns(
        np.array(line, dtype=np.int64),
        np.array(key_id, dtype=np.int64),
        value_array,
        np.array(timestamps_ms, dtype=np.int64),
        np.array(weights, dtype=np.float64),
        np.array(relative, dtype=np.bool_),
    )


def _ordered(fast: _Columns, slow: _Columns) -> _Columns:
    """Both sources interleaved back into input order (a line lives in one source only)."""
    order = np.argsort(np.concatenate([fast.line, slow.line]), kind="stable")
    return _Columns(
        *(
            np.concatenate([getattr(fast, name), getattr(slow, name)])[order]
            for name in ("line", "key_id", "values", "timestamps_ms", "weights", "relative")
        )
    )


def _kind_batch(columns: _Columns, names: npt.NDArray[np.object_]) -> KindBatch | None:
    if columns.line.shape[0] == 0:
        return None
    distinct, key_index = dense_index(columns.key_id, names.shape[0])
    return KindBatch(
        key_names=names[distinct].tolist(),
        key_index=key_index,
        values=columns.values,
        timestamps_ms=columns.timestamps_ms,
        weights=columns.weights,
        relative=columns.relative,
    )
