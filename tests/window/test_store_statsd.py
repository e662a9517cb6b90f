"""Parser batches go into the store as they are: one ingest call per kind."""

from __future__ import annotations

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
    fates = {
        kind: store.ingest(
            kind,
            batch.key_names,
            batch.key_index,
            batch.values,
            batch.timestamps_ms,
            weights=batch.weights,
            relative=batch.relative,
        )
        for kind, batch in result.batches.items()
    }
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
