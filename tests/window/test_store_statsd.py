"""Parser batches go into the store as they are: one ingest call per kind."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from crdtstream.config import WindowConfig
from crdtstream.crdt import HyperLogLog
from crdtstream.ingest import parse
from crdtstream.window import WindowStore
from crdtstream.window.kinds.distribution import DistributionValue


def test_a_statsd_datagram_lands_in_the_right_kinds_and_windows() -> None:
    datagram = (
        b"hits:3|c|#env:prod\nhits:1|c|@0.5|#env:prod\nqueue:7|g\nqueue:+3|g\n"
        b"users:alice|s\nusers:bob|s\nusers:alice|s\nlatency:12|ms|@0.25\n"
        b"late:1|c|T1\nbad line"
    )
    store = WindowStore("n1~0001", WindowConfig(size_ms=10_000, allowed_lateness_ms=1_000))
    store.advance(20_000)
    result = parse(datagram, now_ms=25_000)
    fates = {kind: store.ingest_batch(kind, batch) for kind, batch in result.batches.items()}
    assert fates["counter"].late_by_key == {"late": 1}
    values = store.read_window(20_000).values
    assert values["hits#env:prod"] == 5.0
    assert values["queue"] == 10.0
    expected = HyperLogLog("x", precision=store.config.distinct_precision)
    expected.add("alice")
    expected.add("bob")
    assert values["users"] == expected.value
    latency = values["latency"]
    assert isinstance(latency, DistributionValue)
    assert latency.count == 4.0
    assert latency.quantile(0.5) == 12.0


def test_lasting_key_ids_give_the_same_state_as_names() -> None:
    """Batches carrying the parser's key ids land exactly as batches looked up by name, across
    batches that reuse keys, a key of another kind and a change of numbering."""
    datagrams = [
        b"a:1|c\nb:2|c|#t:1\nc:x|s",
        b"a:3|c\nc:1|c\nd:4|g",  # c is a distinct key: the counter row is rejected
        b"b:5|c|#t:1\na:1|c\nc:y|s\nc:2|c",
    ]
    by_name = WindowStore("n1~0001")
    by_id = WindowStore("n1~0001")
    rejected: list[tuple[int, int]] = []
    for number, datagram in enumerate(datagrams):
        for kind, batch in parse(datagram, now_ms=5_000).batches.items():
            arrays = (batch.key_names, batch.key_index, batch.values, batch.timestamps_ms)
            options: dict[str, Any] = {"weights": batch.weights, "relative": batch.relative}
            named = by_name.ingest(kind, *arrays, **options)
            # The last batch comes under a fresh numbering: the store must not trust old ids.
            space = batch.key_space if number < 2 else object()
            numbered = by_id.ingest(
                kind, *arrays, **options, key_ids=batch.key_ids, key_space=space
            )
            assert numbered == named, f"batch {number} kind {kind}"
            rejected.append((named.rejected, numbered.rejected))
    assert by_id.read_window(0).values == by_name.read_window(0).values
    assert by_id.kind_keys == by_name.kind_keys
    assert sum(pair[1] for pair in rejected) == 2


def test_key_ids_must_number_the_names() -> None:
    store = WindowStore("n1~0001")
    arrays = (["a", "b"], np.array([0, 1]), np.ones(2), np.zeros(2, dtype=np.int64))
    for key_ids in (np.array([0]), np.array([0, -1])):
        with pytest.raises(ValueError, match="key_ids"):
            store.ingest("counter", *arrays, key_ids=key_ids, key_space=object())
