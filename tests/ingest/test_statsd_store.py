"""The parser's batches go into the windowed store exactly as its ingest API takes them."""

from __future__ import annotations

import pytest

from crdtstream.config import WindowConfig
from crdtstream.ingest import parse
from crdtstream.window import WindowStore

NOW_MS = 1_700_000_005_000


def ingest_all(store: WindowStore, datagrams: list[bytes]) -> dict[str, int]:
    accepted: dict[str, int] = {}
    for kind, batch in parse(datagrams, NOW_MS).batches.items():
        result = store.ingest_batch(kind, batch)
        accepted[kind] = result.accepted
    return accepted


def only_value(store: WindowStore, key: str) -> object:
    windows = store.read_key(key)
    assert len(windows) == 1
    return windows[0].value


def test_every_kind_lands_in_the_store() -> None:
    store = WindowStore("node-a~0001", WindowConfig(size_ms=10_000))
    datagrams = [
        b"hits:1|c|@0.5|#env:prod\nhits:3|c|#env:prod\ntemp:20|g\ntemp:+2|g",
        b"users:alice|s\nusers:bob|s\nusers:alice|s\nlatency:10:20|ms|@0.5\nbad:x|c",
    ]
    accepted = ingest_all(store, datagrams)
    assert accepted == {"counter": 2, "gauge": 2, "distinct": 3, "distribution": 2}
    assert only_value(store, "hits#env:prod") == pytest.approx(5.0)
    assert only_value(store, "temp") == pytest.approx(22.0)
    assert only_value(store, "users") == pytest.approx(2, abs=0.5)
