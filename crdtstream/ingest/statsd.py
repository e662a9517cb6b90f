"""The vectorised statsd / DogStatsD parser: a whole batch of datagrams in a few numpy passes.

``parse(datagrams, now_ms)`` returns a :class:`~crdtstream.ingest.batch.ParseResult` equal to
the one of the per-line oracle :func:`~crdtstream.ingest.statsd_reference.parse_reference`: the
same rows in the same order, the same error counts. How it gets there:

1. :func:`~crdtstream.ingest._scan.scan` finds line bounds, the name/value/type split and the
   optional fields of every line with whole-buffer searches, and marks the *simple* lines.
2. Numbers (values, rates, ``|T`` seconds) of simple lines are parsed vectorised where that is
   provably exact (:mod:`~crdtstream.ingest._numbers`); the few other values (exponents, long
   mantissas) one by one with the oracle's own number rule.
3. Keys are interned by a hash of their name and tag bytes, checked byte for byte, so only each
   distinct raw name and tag list is canonicalised (tags sorted) in Python, not each line; the
   pair is then found in a bounded :class:`~crdtstream.ingest._catalogue.KeyCatalogue` that
   lives across calls, so a key seen before costs no string work and keeps one string object
   and one id (``KindBatch.key_ids``, which the store can remember).
4. Every line that is not simple (rare forms such as non-ASCII bytes or exotic rates, and all
   malformed lines) goes through the exact per-line parser, which names rejection reasons.

No clock (``now_ms`` is an argument), no I/O. The only state kept between calls is the key
catalogue (and caches of canonical texts); the rows returned never depend on it, only the
numbering in ``key_ids`` does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from crdtstream.ingest._assemble import (
    Lines,
    Rows,
    fallback_columns,
    fast_columns,
    kind_batch,
    ordered,
)
from crdtstream.ingest._catalogue import KeyCatalogue
from crdtstream.ingest._intern import SegmentInterner
from crdtstream.ingest._numbers import Decimals, parse_decimals
from crdtstream.ingest._scan import FIELD_RATE, FIELD_TAGS, FIELD_TIME, Layout, scan
from crdtstream.ingest.batch import (
    KINDS,
    REASONS,
    Kind,
    KindBatch,
    ParseResult,
)
from crdtstream.ingest.statsd_reference import (
    MAX_LINE_BYTES,
    MAX_TIMESTAMP_DIGITS,
    LineRejectedError,
    ParsedLine,
    canonical_name,
    canonical_tags,
    number_or_none,
    parse_line,
)

__all__ = ["parse"]

Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
_DISTINCT = KINDS.index("distinct")
_REASON_CODES = {reason: code for code, reason in enumerate(REASONS)}
_MAX_VECTOR_MEMBER_BYTES = 256

# Each batch canonicalises every distinct raw name and tag list once; remembering recent answers
# across batches (the functions are pure) spares most of even that on steady traffic.
_CACHE_ENTRIES = 1 << 15
_cached_canonical_name = functools.lru_cache(maxsize=_CACHE_ENTRIES)(canonical_name)
_cached_canonical_tags = functools.lru_cache(maxsize=_CACHE_ENTRIES)(canonical_tags)
# Keys live on across batches (bounded), so a known key costs no string work and reaches the
# store as the same string object, its hash already computed. The shared catalogue is lent to
# one parse at a time (list pop and append are atomic); a parse running while another holds it
# uses a fresh one of its own, correct but without the memory of earlier batches.
_IDLE_CATALOGUES = [KeyCatalogue()]


def _borrow_catalogue() -> tuple[KeyCatalogue, bool]:
    """The shared catalogue when it is idle (True), else a fresh private one (False)."""
    try:
        return _IDLE_CATALOGUES.pop(), True
    except IndexError:
        return KeyCatalogue(), False


def _join(datagrams: bytes | bytearray | memoryview | Sequence[bytes]) -> bytes:
    if isinstance(datagrams, (bytes, bytearray, memoryview)):
        return bytes(datagrams) + b"\n"
    # The empty last item makes join end the buffer with a newline, without a second copy.
    return b"\n".join([*datagrams, b""])


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
    numeric_rows, member_rows = _value_rows(data, buffer, layout, simple)
    errors: dict[str, int] = {}
    catalogue, shared = _borrow_catalogue()
    try:
        catalogue.start_afresh_if_full()
        key_id = _intern_keys(data, buffer, layout, simple, errors, catalogue)
        fallback = _parse_fallback(data, layout, simple, now_ms, max_line_bytes, errors)
        fallback_keys = list(dict.fromkeys(parsed.key for parsed in fallback.values()))
        ids = catalogue.key_ids(fallback_keys).tolist()
        key_table = dict(zip(fallback_keys, ids, strict=True))
        names = catalogue.names()
        key_space = catalogue.generation
    finally:
        if shared:
            _IDLE_CATALOGUES.append(catalogue)
    lines = Lines(layout, simple & (key_id >= 0), rate, timestamp_ms, key_id)
    batches: dict[Kind, KindBatch] = {}
    for kind_index, kind in enumerate(KINDS):
        rows = member_rows if kind == "distinct" else numeric_rows
        fast = fast_columns(buffer, lines, rows, kind_index)
        slow = fallback_columns(fallback, kind, key_table)
        batch = kind_batch(fast if slow is None else ordered(fast, slow), names, key_space)
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
    data: bytes, buffer: npt.NDArray[np.uint8], layout: Layout, simple: BoolArray
) -> tuple[Rows, Rows]:
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
    _parse_rare_values(data, start, end, parsed)
    simple[row_line[~parsed.simple]] = False
    members = np.flatnonzero(simple & (layout.kind == _DISTINCT))
    member_start = layout.name_end[members] + 1
    member_end = layout.value_end[members]
    # A very long member would widen the fixed-width matrix it is hashed in for every member;
    # such lines take the per-line path instead.
    member_bytes = member_end - member_start
    simple[members[(member_bytes <= 0) | (member_bytes > _MAX_VECTOR_MEMBER_BYTES)]] = False
    no_values = np.zeros(members.shape[0])
    return (
        Rows(row_line, start, end, parsed.value, parsed.signed),
        Rows(members, member_start, member_end, no_values, no_values.astype(np.bool_)),
    )


def _parse_rare_values(data: bytes, starts: Int64Array, ends: Int64Array, parsed: Decimals) -> None:
    """Values the vectorised decimals could not prove exact (exponents, 16 or more digits, as
    clients printing ``repr`` floats send) are parsed one by one with the oracle's own number
    rule, so their line stays on the fast path; the rest stay not simple."""
    rare = np.flatnonzero(~parsed.simple)
    if rare.shape[0] == 0:
        return
    texts = [
        data[start:end]
        for start, end in zip(starts[rare].tolist(), ends[rare].tolist(), strict=True)
    ]
    values = [number_or_none(text) for text in texts]
    found = [index for index, value in enumerate(values) if value is not None]
    if not found:
        return
    rows = rare[found]
    parsed.value[rows] = [values[index] for index in found]
    parsed.signed[rows] = [texts[index][:1] in (b"+", b"-") for index in found]
    parsed.simple[rows] = True


def _intern_keys(
    data: bytes,
    buffer: npt.NDArray[np.uint8],
    layout: Layout,
    simple: BoolArray,
    errors: dict[str, int],
    catalogue: KeyCatalogue,
) -> Int64Array:
    """``catalogue`` id of every simple line's key: -1 elsewhere, and
    where the name or tags are rejected (those lines are counted in ``errors``). Names and tag
    lists are interned apart and each distinct one is canonicalised once."""
    key_id = np.full(simple.shape[0], -1, dtype=np.int64)
    lines = np.flatnonzero(simple)
    if lines.shape[0] == 0:
        return key_id
    interner = SegmentInterner(data)
    names = _canonical_segments(
        data, interner, layout.starts[lines], layout.name_end[lines], _cached_canonical_name
    )
    tag_starts = layout.field_starts[lines, FIELD_TAGS]
    tagged = np.flatnonzero(tag_starts >= 0)
    tags = _canonical_segments(
        data,
        interner,
        tag_starts[tagged],
        layout.field_ends[lines[tagged], FIELD_TAGS],
        _cached_canonical_tags,
    )
    collided = names.collided.copy()
    collided[tagged] |= tags.collided
    simple[lines[collided]] = False
    reason = names.reason.copy()
    reason[tagged] = np.where(reason[tagged] >= 0, reason[tagged], tags.reason)
    counted = np.bincount(reason[~collided & (reason >= 0)], minlength=len(REASONS))
    for code in np.flatnonzero(counted).tolist():
        errors[REASONS[code]] = errors.get(REASONS[code], 0) + int(counted[code])
    good = np.flatnonzero(~collided & (reason < 0))
    key_id[lines[good]] = _join_pairs(names, tags, tagged, good, catalogue)
    return key_id


def _join_pairs(
    names: _Canonical,
    tags: _Canonical,
    tagged: Int64Array,
    good: Int64Array,
    catalogue: KeyCatalogue,
) -> Int64Array:
    """``catalogue`` key id of each ``good`` row: one canonical key per distinct (name, tag text)
    pair. Rows index ``names``; ``tagged`` rows also index ``tags``."""
    # Only names and tag lists that some good row uses enter the catalogue.
    used = np.zeros(len(names.texts), dtype=np.bool_)
    used[names.inverse[good]] = True
    name_ids = np.full(len(names.texts), -1, dtype=np.int64)
    used_names = np.flatnonzero(used)
    name_ids[used_names] = catalogue.name_ids([names.texts[i] for i in used_names.tolist()])
    # Raw tag lists that sort to the same text (``b,a`` and ``a,b``) share one tags id.
    tags_ids = np.zeros(names.inverse.shape[0], dtype=np.int64)  # 0: no tags
    if len(tags.texts):
        tags_ids[tagged] = catalogue.tags_ids(tags.texts)[tags.inverse]
    return catalogue.row_keys(name_ids[names.inverse[good]], tags_ids[good])


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
