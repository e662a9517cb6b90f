"""The shared hash, HyperLogLog register math and logarithmic mapping: scalar and vector agree."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtstream.crdt.hashing import bit_length_many, hash64, hash64_many
from crdtstream.crdt.hyperloglog import hll_estimate, hll_index_rank, hll_index_rank_one
from crdtstream.crdt.mapping import LogMapping

int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=20))
def test_bytes_hash_vector_matches_scalar(items: list[bytes]) -> None:
    assert hash64_many(items).tolist() == [hash64(item) for item in items]


@given(st.lists(st.text(max_size=30), min_size=1, max_size=20))
def test_str_hash_vector_matches_scalar_and_utf8(items: list[str]) -> None:
    expected = [hash64(item.encode("utf-8")) for item in items]
    assert hash64_many(items).tolist() == expected
    assert [hash64(item) for item in items] == expected


@given(st.lists(int64s, min_size=1, max_size=20))
def test_int_hash_vector_matches_scalar(items: list[int]) -> None:
    expected = [hash64(item) for item in items]
    assert hash64_many(np.array(items, dtype=np.int64)).tolist() == expected
    assert hash64_many(items).tolist() == expected


@given(st.lists(st.one_of(st.text(max_size=5), st.binary(max_size=5), int64s), min_size=1))
def test_mixed_sequence_hashes_each_item_by_its_own_type(items: list[str | bytes | int]) -> None:
    assert hash64_many(items).tolist() == [hash64(item) for item in items]


def test_trailing_nul_bytes_are_not_significant_and_others_are() -> None:
    assert hash64(b"a") == hash64(b"a\x00\x00")
    assert hash64(b"a") != hash64(b"\x00a")
    assert hash64(b"") != hash64(0)
    assert len({hash64(n) for n in range(10_000)}) == 10_000


def test_unhashable_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="cannot hash float"):
        hash64(1.5)  # type: ignore[arg-type]


@given(st.lists(st.integers(min_value=0, max_value=2**64 - 1), min_size=1))
def test_bit_length_many_is_exact(values: list[int]) -> None:
    array = np.array(values, dtype=np.uint64)
    assert bit_length_many(array).tolist() == [value.bit_length() for value in values]


@given(st.integers(min_value=0, max_value=2**64 - 1), st.integers(min_value=4, max_value=18))
def test_index_rank_vector_matches_scalar(hash_value: int, precision: int) -> None:
    indexes, ranks = hll_index_rank(np.array([hash_value], dtype=np.uint64), precision)
    index, rank = hll_index_rank_one(hash_value, precision)
    assert (int(indexes[0]), int(ranks[0])) == (index, rank)
    assert 0 <= index < 2**precision
    assert 1 <= rank <= 65 - precision


def test_estimate_of_empty_registers_is_zero() -> None:
    assert hll_estimate(np.zeros(1 << 10, dtype=np.uint8), 10) == 0


def test_estimate_rejects_wrong_register_count() -> None:
    with pytest.raises(ValueError, match="expected 1024 registers"):
        hll_estimate(np.zeros(100, dtype=np.uint8), 10)


@given(st.floats(min_value=1e-300, max_value=1e300), st.sampled_from([0.001, 0.01, 0.05]))
def test_mapping_key_agrees_and_representative_is_accurate(value: float, accuracy: float) -> None:
    mapping = LogMapping(accuracy)
    key = mapping.key(value)
    assert key == int(mapping.keys(np.array([value]))[0])
    error = abs(mapping.value(key) - value) / value
    assert error <= accuracy * (1 + 1e-9), f"value={value} key={key} error={error}"


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_mapping_key_rejects_non_positive_or_non_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="positive finite"):
        LogMapping(0.01).key(bad)


def test_wide_items_take_the_item_by_item_path_with_the_same_answer() -> None:
    items = ["x" * 300, "short", "é" * 200]
    assert hash64_many(items).tolist() == [hash64(item) for item in items]
    assert hash64_many(np.array(items)).tolist() == [hash64(item) for item in items]
