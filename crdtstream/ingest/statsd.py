"""The vectorised statsd / DogStatsD parser: a whole batch of datagrams in a few passes.

``parse(datagrams, now_ms)`` returns a :class:`~crdtstream.ingest.batch.ParseResult` equal to
the one of the per-line oracle :func:`~crdtstream.ingest.statsd_reference.parse_reference`: the
same rows in the same order, the same error counts. How it gets there:

1. A scanner (:mod:`~crdtstream.ingest._front`: compiled when built, else numpy) finds every
   line's bounds, type and optional fields, marks the *simple* lines, reads their rates, ``|T``
   seconds and values where that is provably exact, and groups their names and tag lists by
   their bytes.
2. The few other values (exponents, long mantissas) are read one by one with the oracle's own
   number rule.
3. Only each distinct raw name and tag list is canonicalised (tags sorted) in Python, not each
   line; the pair is then found in a bounded :class:`~crdtstream.ingest._catalogue.KeyCatalogue`
   that lives across calls, so a key seen before costs no string work and keeps one string
   object and one id (``KindBatch.key_ids``, which the store can remember).
4. Every line that is not simple (rare forms such as non-ASCII bytes or exotic rates, and all
   malformed lines) goes through the exact per-line parser, which names rejection reasons.

No clock (``now_ms`` is an argument), no I/O. The only state kept between calls is the key
catalogue (and caches of canonical texts); the rows returned never depend on it, only the
numbering in ``key_ids`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import repeat

import numpy as np
import numpy.typing as npt

from crdtstream.ingest._assemble import (
    Lines,
    fallback_columns,
    fast_columns,
    kind_batch,
    ordered,
)
from crdtstream.ingest._catalogue import DEFAULT_MAX_KEYS, KeyCatalogue
from crdtstream.ingest._front import (
    COMPILED,
    Front,
    Rows,
    Scanner,
    Segments,
    compiled_front,
    numpy_front,
)
from crdtstream.ingest.batch import (
    KINDS,
    REASONS,
    Kind,
    KindBatch,
    ParseResult,
)
from crdtstream.ingest.statsd_reference import (
    MAX_LINE_BYTES,
    LineRejectedError,
    ParsedLine,
    canonical_name,
    canonical_tags,
    number_or_none,
    parse_line,
)

__all__ = ["COMPILED", "StatsdParser", "parse"]

Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
_REASON_CODES = {reason: code for code, reason in enumerate(REASONS)}

_UNSEEN = np.iinfo(np.int64).min
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


class StatsdParser:
    """A statsd parser with a memory of keys of its own (a bounded key catalogue), for a caller
    that parses a stream of batches: a node, a benchmark. One call at a time.

    ``max_keys`` bounds the catalogue (it starts afresh past that many keys); ``scanner`` is as
    for :func:`parse`.
    """

    def __init__(
        self,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        max_line_bytes: int = MAX_LINE_BYTES,
        scanner: Scanner = "auto",
    ) -> None:
        self.max_line_bytes = max_line_bytes
        self.scanner: Scanner = scanner
        self._catalogue = KeyCatalogue(max_keys)

    def parse(self, datagrams: bytes | Sequence[bytes], now_ms: int) -> ParseResult:
        """As :func:`parse`, with this parser's settings and memory of keys."""
        return _parse(datagrams, now_ms, self.max_line_bytes, self.scanner, self._catalogue)


def parse(
    datagrams: bytes | Sequence[bytes],
    now_ms: int,
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
    scanner: Scanner = "auto",
) -> ParseResult:
    """Parse one datagram or a batch of datagrams of newline-separated statsd lines.

    Lines without ``|T`` get ``now_ms`` as their event time. Malformed lines are skipped and
    counted in ``errors`` by reason; the other lines of the datagram are kept. ``scanner``
    picks the first stage: ``"compiled"`` (raises RuntimeError when the package was built
    without it), ``"numpy"``, or ``"auto"``, the compiled one when :data:`COMPILED`. The result
    is the same either way. Calls share one memory of keys (see :class:`StatsdParser` for a
    parser of one's own).
    """
    catalogue, shared = _borrow_catalogue()
    try:
        return _parse(datagrams, now_ms, max_line_bytes, scanner, catalogue)
    finally:
        if shared:
            _IDLE_CATALOGUES.append(catalogue)


def _parse(
    datagrams: bytes | Sequence[bytes],
    now_ms: int,
    max_line_bytes: int,
    scanner: Scanner,
    catalogue: KeyCatalogue,
) -> ParseResult:
    data = _join(datagrams)
    compiled = COMPILED if scanner == "auto" else scanner == "compiled"
    front = (compiled_front if compiled else numpy_front)(data, max_line_bytes, now_ms)
    simple = front.simple
    _settle_rare_values(data, front.numeric, simple)
    errors: dict[str, int] = {}
    catalogue.start_afresh_if_full()
    key_id = _intern_keys(data, front, errors, catalogue)
    fallback = _parse_fallback(data, front, now_ms, max_line_bytes, errors)
    fallback_keys = list(dict.fromkeys(parsed.key for parsed in fallback.values()))
    ids = catalogue.key_ids(fallback_keys).tolist()
    key_table = dict(zip(fallback_keys, ids, strict=True))
    names = catalogue.names()
    key_space = catalogue.generation
    lines = Lines(front.kind, simple & (key_id >= 0), front.rate, front.timestamp_ms, key_id)
    batches: dict[Kind, KindBatch] = {}
    for kind_index, kind in enumerate(KINDS):
        rows = front.members if kind == "distinct" else front.numeric
        fast = fast_columns(lines, rows, kind_index)
        slow = fallback_columns(fallback, kind, key_table)
        batch = kind_batch(fast if slow is None else ordered(fast, slow), names, key_space)
        if batch is not None:
            batches[kind] = batch
    lines_ok = int(np.count_nonzero(lines.accepted)) + len(fallback)
    return ParseResult(batches, errors, lines_ok, sum(errors.values()))


def _settle_rare_values(data: bytes, rows: Rows, simple: BoolArray) -> None:
    """Values the scanner could not prove exact (exponents, 16 or more digits, as clients
    printing ``repr`` floats send) are read one by one with the oracle's own number rule, so
    their line stays on the fast path; a line with a value that is no number stops being
    simple."""
    rare = np.flatnonzero(~rows.exact & simple[rows.line])
    if rare.shape[0] == 0:
        return
    texts = [
        data[start:end]
        for start, end in zip(rows.start[rare].tolist(), rows.end[rare].tolist(), strict=True)
    ]
    values = [number_or_none(text) for text in texts]
    found = [index for index, value in enumerate(values) if value is not None]
    if found:
        settled = rare[found]
        rows.value[settled] = [values[index] for index in found]
        rows.signed[settled] = [texts[index][:1] in (b"+", b"-") for index in found]
        rows.exact[settled] = True
    simple[rows.line[rare[[value is None for value in values]]]] = False


def _intern_keys(
    data: bytes, front: Front, errors: dict[str, int], catalogue: KeyCatalogue
) -> Int64Array:
    """``catalogue`` id of every simple line's key: -1 elsewhere, and where the name or tags are
    rejected (those lines are counted in ``errors``). Lines whose segment collided stop being
    simple."""
    simple = front.simple
    key_id = np.full(simple.shape[0], -1, dtype=np.int64)
    lines = np.flatnonzero(simple)
    if lines.shape[0] == 0:
        return key_id
    collided = front.names.collided[lines] | front.tags.collided[lines]
    simple[lines[collided]] = False
    name_codes = _segment_codes(
        data, front.names, catalogue.raw_names, canonical_name, catalogue.name_ids
    )
    # One more code at the end, 0 ("no tags"), for the lines without tags (group -1).
    tag_codes = np.append(
        _segment_codes(data, front.tags, catalogue.raw_tags, canonical_tags, catalogue.tags_ids),
        0,
    )
    name_code = name_codes[front.names.group[lines]]
    tag_code = tag_codes[front.tags.group[lines]]
    # A rejected segment's code is -1 - reason; the name is checked before the tags, as the
    # per-line parser does.
    reason = np.where(name_code < 0, -1 - name_code, np.where(tag_code < 0, -1 - tag_code, -1))
    counted = np.bincount(reason[~collided & (reason >= 0)], minlength=len(REASONS))
    for code in np.flatnonzero(counted).tolist():
        errors[REASONS[code]] = errors.get(REASONS[code], 0) + int(counted[code])
    good = np.flatnonzero(~collided & (reason < 0))
    key_id[lines[good]] = catalogue.row_keys(name_code[good], tag_code[good])
    return key_id


def _segment_codes(
    data: bytes,
    segments: Segments,
    known: dict[bytes, int],
    canonical: Callable[[bytes], str],
    number: Callable[[Sequence[str]], Int64Array],
) -> Int64Array:
    """The code of each distinct raw segment: the catalogue id (by ``number``) of its canonical
    text, or ``-1 - reason`` when ``canonical`` rejects it. Segments met before are answered by
    ``known`` (which learns the others), so steady traffic canonicalises nothing."""
    raws = [
        data[start:end]
        for start, end in zip(segments.starts.tolist(), segments.ends.tolist(), strict=True)
    ]
    codes = np.fromiter(map(known.get, raws, repeat(_UNSEEN)), np.int64, len(raws))
    unseen = np.flatnonzero(codes == _UNSEEN)
    if unseen.shape[0] == 0:
        return codes
    accepted: list[int] = []
    texts: list[str] = []
    for row in unseen.tolist():
        try:
            texts.append(canonical(raws[row]))
            accepted.append(row)
        except LineRejectedError as rejected:
            codes[row] = -1 - _REASON_CODES[rejected.reason]
    if texts:
        codes[accepted] = number(texts)
    known.update(zip([raws[row] for row in unseen.tolist()], codes[unseen].tolist(), strict=True))
    return codes


def _parse_fallback(
    data: bytes, front: Front, now_ms: int, max_line_bytes: int, errors: dict[str, int]
) -> dict[int, ParsedLine]:
    """Parse every line that is not simple with the exact per-line parser."""
    parsed: dict[int, ParsedLine] = {}
    lines = np.flatnonzero(~front.simple)
    for line, start, end in zip(
        lines.tolist(), front.starts[lines].tolist(), front.ends[lines].tolist(), strict=True
    ):
        try:
            parsed[line] = parse_line(data[start:end], now_ms, max_line_bytes)
        except LineRejectedError as rejected:
            errors[rejected.reason] = errors.get(rejected.reason, 0) + 1
    return parsed
