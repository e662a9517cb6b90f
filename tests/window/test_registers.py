"""The sparse HLL register table equals dense registers, through adds, merges and extraction."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from crdtstream.crdt.hashing import hash64_many
from crdtstream.crdt.hyperloglog import hll_index_rank
from crdtstream.window.kinds.distinct import RegisterTable

PRECISION = 6


@given(st.integers(0, 2**32), st.integers(1, 400), st.integers(1, 40))
def test_sparse_registers_match_dense_ones(seed: int, events: int, key_count: int) -> None:
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, key_count, events).astype(np.int64)
    hashes = hash64_many(rng.integers(0, 10_000, events).astype(np.int64))
    dense = np.zeros((key_count, 1 << PRECISION), dtype=np.uint8)
    indexes, ranks = hll_index_rank(hashes, PRECISION)
    np.maximum.at(dense, (keys, indexes), ranks)
    table = RegisterTable(PRECISION)
    half = events // 2
    table.add(keys[:half], hashes[:half], version=1)
    table.add(keys[half:], hashes[half:], version=2)
    copy = RegisterTable(PRECISION)
    changed_keys, entries, owner = table.changed_since(0)
    assert copy.merge(changed_keys, entries, owner, version=1).all(), f"seed={seed}"
    assert not copy.merge(changed_keys, entries, owner, version=2).any(), f"seed={seed}"
    for key in range(key_count):
        for store in (table, copy):
            row = store.row(key)
            expected = dense[key] if dense[key].any() else None
            if expected is None:
                assert row is None, f"seed={seed} key={key}"
            else:
                assert row is not None
                assert np.array_equal(row, expected), f"seed={seed} key={key}"
