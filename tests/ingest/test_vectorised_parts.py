"""The vectorised building blocks against plain Python: decimals against ``float``, interning
against grouping by ``bytes``."""

from __future__ import annotations

import random
import re

import numpy as np
import numpy.typing as npt
from hypothesis import given
from hypothesis import strategies as st

from crdtstream.ingest._front import Rows
from crdtstream.ingest._intern import SegmentInterner, _Chunks, byte_words, group_hashes
from crdtstream.ingest._numbers import MAX_DIGITS, parse_decimals
from crdtstream.ingest.statsd import _settle_rare_values

_PLAIN = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")


def segments(texts: list[bytes]) -> tuple[bytes, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``texts`` laid end to end with a ``|`` after each, and their bounds."""
    data = b"".join(text + b"|" for text in texts)
    lengths = np.array([len(text) for text in texts], dtype=np.int64)
    ends = np.cumsum(lengths + 1) - 1
    return data, ends - lengths, ends


def random_number_text(chooser: random.Random) -> bytes:
    if chooser.random() < 0.3:
        width = chooser.choice([0, 1, 2, 5, 16, 17, 18, 20])
        return bytes(chooser.choice(b"0123456789.+-e x") for _ in range(width))
    digits = str(chooser.randrange(10 ** chooser.randrange(1, 18))).encode()
    if chooser.random() < 0.6:
        cut = chooser.randrange(len(digits) + 1)
        digits = digits[:cut] + b"." + digits[cut:]
    return chooser.choice([b"", b"+", b"-"]) + digits


def test_decimals_match_float_exactly() -> None:
    for seed in range(5):
        chooser = random.Random(seed)
        texts = [random_number_text(chooser) for _ in range(20_000)]
        data, starts, ends = segments(texts)
        parsed = parse_decimals(np.frombuffer(data, dtype=np.uint8), starts, ends)
        for text, value, simple in zip(
            texts, parsed.value.tolist(), parsed.simple.tolist(), strict=True
        ):
            digit_count = sum(byte in b"0123456789" for byte in text)
            expected = _PLAIN.fullmatch(text) is not None and digit_count <= MAX_DIGITS
            assert simple == expected, f"seed={seed} text={text!r}"
            if simple:
                assert np.float64(value).tobytes() == np.float64(float(text)).tobytes(), (
                    f"seed={seed} text={text!r}"
                )


def test_timestamps_refuse_signs_and_dots() -> None:
    texts = [b"1700000000", b"+1", b"1.5", b"", b"0"]
    data, starts, ends = segments(texts)
    parsed = parse_decimals(
        np.frombuffer(data, dtype=np.uint8), starts, ends, allow_sign=False, allow_dot=False
    )
    assert parsed.simple.tolist() == [True, False, False, False, True]
    assert parsed.value[[0, 4]].tolist() == [1_700_000_000.0, 0.0]


@given(
    st.lists(st.sampled_from([b"", b"a", b"ab", b"abcdefgh", b"abcdefghi", b"x" * 17]), max_size=40)
)
def test_interning_groups_exactly_by_bytes(texts: list[bytes]) -> None:
    data, starts, ends = segments(texts)
    interned = SegmentInterner(data + b"\n").intern(starts, ends)
    assert not interned.collided.any()
    representatives = [texts[row] for row in interned.representatives.tolist()]
    assert len(set(representatives)) == len(representatives)
    assert [representatives[group] for group in interned.inverse.tolist()] == texts


def test_word_comparison_catches_any_differing_byte() -> None:
    """The check behind collision safety: a row differing from its (forced) representative in
    any byte, including inside a partial last word, is reported unequal."""
    base = b"abcdefghijklmnopqrs"
    texts = [base] + [base[:i] + b"#" + base[i + 1 :] for i in range(len(base))]
    data, starts, ends = segments(texts)
    chunks = _Chunks(byte_words(data), starts, ends - starts)
    everyone_against_first = np.zeros(len(texts), dtype=np.int64)
    assert chunks.equal_to(everyone_against_first).tolist() == [True] + [False] * len(base)


def test_bytes_past_a_segment_end_do_not_count() -> None:
    texts = [b"abc", b"xyz", b"abd"]
    data, starts, _ = segments(texts)
    chunks = _Chunks(byte_words(data), starts, np.array([2, 2, 2]))
    assert chunks.equal_to(np.array([0, 0, 0])).tolist() == [True, False, True]


def test_rare_values_are_parsed_one_by_one_with_the_oracle_rule() -> None:
    texts = [b"1e3", b"0.30000000000000004", b"-2.5E-3", b"abc", b"", b"1e999", b"12.5"]
    data, starts, ends = segments(texts)
    parsed = parse_decimals(np.frombuffer(data, dtype=np.uint8), starts, ends)
    assert parsed.simple.tolist() == [False, False, False, False, False, False, True]
    rows = Rows(np.arange(len(texts)), starts, ends, parsed.value, parsed.signed, parsed.simple)
    simple = np.ones(len(texts), dtype=np.bool_)
    _settle_rare_values(data, rows, simple)
    assert simple.tolist() == [True, True, True, False, False, False, True]
    assert rows.exact.tolist() == simple.tolist()
    assert rows.value[[0, 1, 2, 6]].tolist() == [1000.0, 0.30000000000000004, -0.0025, 12.5]
    assert rows.signed[[0, 1, 2, 6]].tolist() == [False, False, True, False]


def test_hash_grouping_is_exact_even_when_slots_clash() -> None:
    chooser = random.Random(7)
    for round_number in range(20):
        # Few distinct top bits force many hashes into one slot of the table.
        distinct = [
            (chooser.randrange(4) << 60) | chooser.randrange(1 << 20)
            for _ in range(chooser.randrange(1, 50))
        ]
        rows = [chooser.choice(distinct) for _ in range(chooser.randrange(1, 300))]
        inverse, representatives = group_hashes(np.array(rows, dtype=np.uint64))
        groups = [rows[row] for row in representatives.tolist()]
        assert len(set(groups)) == len(groups), f"round={round_number}"
        assert [groups[group] for group in inverse.tolist()] == rows, f"round={round_number}"
