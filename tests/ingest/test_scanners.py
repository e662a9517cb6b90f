"""The two scanners of the vectorised parser find the same thing in the same bytes.

The parser's result equals the oracle's whichever scanner runs (test_statsd_oracle), but a
scanner that wrongly gave up on a line would go unnoticed there: the per-line fallback would
repair it. Here the scanners' findings are compared directly: the same simple lines, kinds,
rates, times, value rows and key segments.
"""

from __future__ import annotations

import importlib
import random

import numpy as np
from hypothesis import given

from bench._statsd import statsd_workload
from crdtstream.crdt.hashing import hash64
from crdtstream.ingest._front import COMPILED, Front, Segments, compiled_front, numpy_front
from crdtstream.ingest._numbers import MAX_DIGITS
from crdtstream.ingest.statsd import _join
from crdtstream.ingest.statsd_reference import MAX_TIMESTAMP_DIGITS
from tests.ingest.test_statsd_oracle import datagrams, mutate

NOW_MS = 1_700_000_000_000


def test_the_compiled_scanner_is_built() -> None:
    """The install builds it wherever a C compiler is found (as on every supported machine);
    without it the parser is correct but parses about a third as many lines per second."""
    assert COMPILED


def segment_bytes(data: bytes, segments: Segments, lines: np.ndarray) -> list[bytes | None]:
    group = segments.group[lines].tolist()
    starts, ends = segments.starts.tolist(), segments.ends.tolist()
    return [None if g < 0 else data[starts[g] : ends[g]] for g in group]


def assert_fronts_agree(data: bytes, message: str, max_line_bytes: int = 8192) -> None:
    compiled = compiled_front(data, max_line_bytes, NOW_MS)
    vectorised = numpy_front(data, max_line_bytes, NOW_MS)
    assert compiled.starts.tolist() == vectorised.starts.tolist(), message
    assert compiled.ends.tolist() == vectorised.ends.tolist(), message
    assert compiled.simple.tolist() == vectorised.simple.tolist(), message
    simple = np.flatnonzero(compiled.simple)
    assert compiled.kind[simple].tolist() == vectorised.kind[simple].tolist(), message
    assert compiled.rate[simple].tobytes() == vectorised.rate[simple].tobytes(), message
    assert compiled.timestamp_ms[simple].tolist() == vectorised.timestamp_ms[simple].tolist()
    assert_rows_agree(compiled, vectorised, message)
    for field in ("names", "tags"):
        mine, theirs = getattr(compiled, field), getattr(vectorised, field)
        exact = simple[~theirs.collided[simple]]
        assert segment_bytes(data, mine, exact) == segment_bytes(data, theirs, exact), message
        # The compiled grouping is exact: one group per distinct byte string.
        texts = [data[s:e] for s, e in zip(mine.starts.tolist(), mine.ends.tolist(), strict=True)]
        assert len(set(texts)) == len(texts), message
        assert not mine.collided.any(), message


def assert_rows_agree(compiled: Front, vectorised: Front, message: str) -> None:
    """The value rows of simple lines agree (rows of other lines are never read)."""
    for field in ("numeric", "members"):
        mine, theirs = getattr(compiled, field), getattr(vectorised, field)
        mine_kept = compiled.simple[mine.line]
        theirs_kept = vectorised.simple[theirs.line]
        for column in ("line", "start", "end", "exact"):
            mine_column = getattr(mine, column)[mine_kept].tolist()
            assert mine_column == getattr(theirs, column)[theirs_kept].tolist(), message
        exact = mine.exact[mine_kept]
        mine_values, theirs_values = mine.value[mine_kept], theirs.value[theirs_kept]
        assert mine_values[exact].tobytes() == theirs_values[exact].tobytes(), message
        mine_signed, theirs_signed = mine.signed[mine_kept], theirs.signed[theirs_kept]
        assert mine_signed[exact].tolist() == theirs_signed[exact].tolist(), message
        if field == "members":
            assert mine.hashes[mine_kept].tolist() == theirs.hashes[theirs_kept].tolist(), message


@given(datagrams)
def test_scanners_agree_on_random_lines(datagram_list: list[bytes]) -> None:
    assert_fronts_agree(_join(datagram_list), f"datagrams={datagram_list!r}")


@given(datagrams)
def test_scanners_agree_with_a_small_line_limit(datagram_list: list[bytes]) -> None:
    assert_fronts_agree(_join(datagram_list), f"datagrams={datagram_list!r}", max_line_bytes=24)


def test_scanners_agree_on_the_fuzzed_standard_mix() -> None:
    for seed in range(6):
        chooser = random.Random(3_000 + seed)
        workload = statsd_workload(4_000, seed)
        fuzzed = [mutate(d, chooser) if chooser.random() < 0.5 else d for d in workload]
        assert_fronts_agree(_join(fuzzed), f"seed={3_000 + seed}")


# Values at the edges of what the scanners read themselves.
_EDGE_VALUES = [
    b"1" * 15,
    b"1" * 16,
    b"-" + b"9" * 15,
    b"+" + b"9" * 16,
    b"1." + b"0" * 14,
    b"." + b"5" * 15,
    b"0",
    b"-0",
    b"+0.0",
    b"5.",
    b".5",
    b".",
    b"",
    b"1e3",
    b"0x1",
    b"1.2.3",
    b"--1",
    b"+",
]
_EDGE_FIELDS = [
    b"@1",
    b"@1.0",
    b"@0",
    b"@0.0000001",
    b"@1.0000001",
    b"@+0.5",
    b"@-0.5",
    b"@.5",
    b"@",
    b"T" + b"1" * 12,
    b"T" + b"1" * 13,
    b"T0",
    b"T",
    b"T+1",
    b"T1.5",
    b"#",
    b"#a",
    b"#a:b,c",
    b"c:x",
    b"c",
    b"ext:1|more:2",
    b"X",
    b"",
    b"@0.5|@0.5",
    b"T1|T2",
    b"#a|#b",
]
_EDGE_TYPES = [b"c", b"g", b"s", b"ms", b"h", b"d", b"m", b"msx", b"", b"cc"]


def edge_line(chooser: random.Random) -> bytes:
    kind = chooser.choice(_EDGE_TYPES)
    if kind == b"s" and chooser.random() < 0.5:
        value = b"m" * chooser.choice([1, 255, 256, 257])
    else:
        value = b":".join(chooser.choice(_EDGE_VALUES) for _ in range(chooser.randrange(1, 4)))
    fields = [chooser.choice(_EDGE_FIELDS) for _ in range(chooser.randrange(0, 4))]
    if chooser.random() < 0.05:
        fields = [b"c:x"] * chooser.choice([14, 15, 16])
    return b"|".join([b"edge.name:" + value, kind, *fields])


def test_scanners_agree_on_edge_cases() -> None:
    for seed in range(10):
        chooser = random.Random(4_000 + seed)
        lines = [edge_line(chooser) for _ in range(2_000)]
        assert_fronts_agree(_join([b"\n".join(lines)]), f"seed={4_000 + seed}")


def test_many_distinct_names_grow_the_compiled_table() -> None:
    """More distinct names than the first table holds, each seen twice."""
    names = [f"metric.{index}" for index in range(5_000)]
    lines = [f"{name}:1|c|#k:{index % 7}" for index, name in enumerate(names + names)]
    data = _join(["\n".join(lines).encode()])
    front = compiled_front(data, 8192, NOW_MS)
    assert front.names.starts.shape[0] == 5_000
    assert front.tags.starts.shape[0] == 7
    group = front.names.group
    assert group[:5_000].tolist() == group[5_000:].tolist()
    assert_fronts_agree(data, "distinct names")


def test_compiled_member_hashes_are_hash64_at_every_length() -> None:
    chooser = random.Random(5_000)
    alphabet = bytes(range(0x21, 0x7F)).replace(b"|", b"")
    members = [bytes(chooser.choice(alphabet) for _ in range(length)) for length in range(1, 257)]
    data = _join([b"\n".join(b"s:" + member + b"|s" for member in members)])
    front = compiled_front(data, 8192, NOW_MS)
    assert front.simple.all()
    assert front.members.hashes is not None
    assert front.members.hashes.tolist() == [hash64(member) for member in members]


def test_the_compiled_limits_are_the_python_parsers_limits() -> None:
    module = importlib.import_module("crdtstream.ingest._cscan")
    assert module.MAX_DIGITS == MAX_DIGITS
    assert module.MAX_TIMESTAMP_DIGITS == MAX_TIMESTAMP_DIGITS


_G, _C = 0x9E3779B97F4A7C15, 0xFF51AFD7ED558CCD
_MASK = (1 << 64) - 1


def colliding_names(count: int, seed: int) -> list[bytes]:
    """16-byte names whose grouping hash under key 0 is the same: the first word is drawn at
    random, the second chosen to bring the hash state to one fixed value (the hash is not a
    secret once its key is known; that is why the real key is secret)."""
    rng = np.random.default_rng(seed)
    allowed = bytes(range(0x21, 0x7F)).translate(None, b":|#")  # what a simple name may hold
    printable = np.frombuffer(allowed, np.uint8)
    target = 0x4141414141414141
    names: list[bytes] = []
    while len(names) < count:
        first = printable[rng.integers(0, len(printable), (1 << 18, 8))].view("<u8").ravel()
        state = ((np.uint64((16 * _G) & _MASK) ^ first) * np.uint64(_C)).astype(np.uint64)
        state ^= state >> np.uint64(29)
        second = state ^ np.uint64(target)
        chars = second.view(np.uint8).reshape(-1, 8)
        ok = np.isin(chars, printable).all(axis=1)
        for word_1, word_2 in zip(first[ok].tolist(), second[ok].tolist(), strict=True):
            names.append(word_1.to_bytes(8, "little") + word_2.to_bytes(8, "little"))
    return names[:count]


def test_names_crafted_to_collide_fall_back_to_the_exact_path() -> None:
    names = colliding_names(400, seed=31)
    data = _join([b"\n".join(name + b":1|c" for name in names)])
    crowded = compiled_front(data, 8192, NOW_MS, seed=0)
    # Under the known key the table gives up on the lines past its probe limit...
    assert 0 < int(np.count_nonzero(~crowded.simple)) < len(names)
    # ...which the per-line parser then reads; the secret key spreads them as usual.
    assert compiled_front(data, 8192, NOW_MS).simple.all()
    from crdtstream.ingest import StatsdParser, parse_reference

    assert StatsdParser(scanner="compiled").parse(data, NOW_MS) == parse_reference(data, NOW_MS)
