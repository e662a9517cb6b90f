"""The vectorised parser against its oracle, the per-line parser: on random valid and invalid
input both must return equal results (same rows in the same order, same error counts), and
neither may raise."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from bench._statsd import statsd_workload
from crdtstream.ingest import ParseResult, parse, parse_reference
from tests.ingest.parsers import VECTORISED

NOW_MS = 1_700_000_000_000

names = st.sampled_from(
    [
        *(b"api.hits", b"a", b"db.q", b"", b"x y", b"n#1", "température".encode(), b"\xff"),
        *(b"a:b", b"_e{1,1}", b"_sc", b"_e"),
    ]
)
numbers = st.one_of(
    st.integers(-(10**16), 10**16).map(lambda n: str(n).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).encode()),
    st.tuples(st.integers(-(10**9), 10**9), st.integers(0, 9)).map(
        lambda pair: f"{pair[0] / 10 ** pair[1]:.{pair[1]}f}".encode()
    ),
    st.sampled_from(
        [b"+1", b"-0", b"5.", b".5", b"1e3", b"1E-2", b"", b".", b"x", b"nan", b"1_0", b"--1"]
    ),
)
types = st.sampled_from([b"c", b"g", b"s", b"ms", b"h", b"d", b"", b"x", b"C", b"m"])
tags = st.lists(
    st.sampled_from([b"env:prod", b"region:eu", b"a", b"", b"b c", b"\xff", b"k:v:w"]),
    min_size=1,
    max_size=4,
).map(lambda parts: b"#" + b",".join(parts))
rates = st.one_of(
    numbers,
    st.floats(0, 1).map(lambda f: repr(f).encode()),
    st.sampled_from([b"0.1", b"1", b"1.0", b".25", b"+0.5", b"1e-1", b"0.0000000000000001"]),
)
extras = st.one_of(
    rates.map(lambda rate: b"@" + rate),
    tags,
    st.integers(-5, 10**13).map(lambda n: b"T" + str(n).encode()),
    st.sampled_from([b"c:abc", b"e:x", b"card:low", b"", b"X", b"c", b"Tx", b"@0.5"]),
)


@st.composite
def lines(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 19)) == 0:
        return draw(st.binary(max_size=30)).replace(b"\n", b"")
    values = b":".join(draw(st.lists(numbers, min_size=1, max_size=3)))
    separator = draw(st.sampled_from([b":", b":", b":", b""]))
    line = draw(names) + separator + values + b"|" + draw(types)
    for extra in draw(st.lists(extras, max_size=4)):
        line += b"|" + extra
    return line


datagrams = st.lists(
    st.lists(lines(), min_size=1, max_size=8).map(b"\n".join), min_size=1, max_size=4
)


def assert_same(datagram_list: list[bytes], message: str, **options: int) -> None:
    """Both scanners of the vectorised parser give the oracle's result."""
    reference = parse_reference(datagram_list, NOW_MS, **options)
    for scanner, vectorised_parse in VECTORISED.items():
        vectorised = vectorised_parse(datagram_list, NOW_MS, **options)
        assert vectorised == reference, f"{message} scanner={scanner}"
        assert_consistent(vectorised, f"{message} scanner={scanner}")


def assert_consistent(result: ParseResult, message: str) -> None:
    rows = sum(len(batch) for batch in result.batches.values())
    assert rows >= result.lines_ok, message
    assert result.lines_rejected == sum(result.errors.values()), message
    for batch in result.batches.values():
        assert len(set(batch.key_names)) == len(batch.key_names), message
        assert set(batch.key_index.tolist()) == set(range(len(batch.key_names))), message


@given(datagrams)
def test_vectorised_equals_per_line_on_random_lines(datagram_list: list[bytes]) -> None:
    assert_same(datagram_list, f"datagrams={datagram_list!r}")


@given(datagrams, st.integers(1, 40))
def test_equal_with_a_small_line_limit(datagram_list: list[bytes], max_line_bytes: int) -> None:
    assert_same(datagram_list, f"datagrams={datagram_list!r}", max_line_bytes=max_line_bytes)


@given(st.lists(st.binary(max_size=200), max_size=6))
def test_arbitrary_bytes_never_raise_and_agree(datagram_list: list[bytes]) -> None:
    assert_same(datagram_list, f"datagrams={datagram_list!r}")


_SPECIAL = b":|#@,.\n+-eT0123456789 \xff"


def mutate(datagram: bytes, chooser: random.Random) -> bytes:
    """A few random edits: replace, insert or delete a byte, biased towards delimiters."""
    data = bytearray(datagram)
    for _ in range(chooser.randrange(1, 4)):
        position = chooser.randrange(len(data) + 1)
        action = chooser.randrange(3)
        byte = chooser.choice(_SPECIAL) if chooser.random() < 0.8 else chooser.randrange(256)
        if action == 0 and position < len(data):
            data[position] = byte
        elif action == 1:
            data.insert(position, byte)
        elif position < len(data):
            del data[position]
    return bytes(data)


def test_seeded_fuzz_of_the_standard_mix() -> None:
    for seed in range(8):
        chooser = random.Random(seed)
        workload = statsd_workload(2_000, seed)
        fuzzed = [mutate(d, chooser) if chooser.random() < 0.5 else d for d in workload]
        assert_same(fuzzed, f"seed={seed}")


def test_seeded_fuzz_of_random_bytes() -> None:
    for seed in range(20):
        chooser = random.Random(1_000 + seed)
        noise = [
            bytes(chooser.choice(_SPECIAL + b"abc") for _ in range(chooser.randrange(60)))
            for _ in range(50)
        ]
        assert_same(noise, f"seed={1_000 + seed}")


def test_clean_standard_mix_is_fully_accepted() -> None:
    workload = statsd_workload(1_000, 3)
    result = parse(workload, NOW_MS)
    assert (result.lines_ok, result.lines_rejected) == (1_000, 0)
    assert result == parse_reference(workload, NOW_MS)


def test_high_cardinality_batches_agree() -> None:
    """Enough distinct names and tag lists that keys are grouped by sorting, not by a table."""
    for seed in range(3):
        chooser = random.Random(2_000 + seed)
        lines = [
            f"m{chooser.randrange(400)}:{chooser.randrange(100)}|c|#t:{chooser.randrange(200)}"
            for _ in range(1_500)
        ]
        assert_same(["\n".join(lines).encode()], f"seed={2_000 + seed}")
