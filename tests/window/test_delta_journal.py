"""The change journal: ``delta_since`` through it equals a walk over every slice.

Random programs of batches of every kind, set removals, late events, clock advances that evict
old slices, merges of other replicas' deltas and snapshot restores run against one store; at
random points the delta since every remembered version (and a few arbitrary ones) is taken both
ways and compared cell by cell, and through the codec.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from crdtstream.config import WindowConfig
from crdtstream.crdt.hashing import hash64_many
from crdtstream.storage.snapshot import restore, snapshot
from crdtstream.window.delta import StoreDelta
from crdtstream.window.journal import ChangeJournal
from crdtstream.window.store import WindowStore
from crdtstream.window.sync import walk_delta_since

CONFIG = WindowConfig(size_ms=1_000, allowed_lateness_ms=1_500, retention_windows=4)
KINDS = ("counter", "gauge", "distinct", "distribution", "max", "min", "set")
NAMES = [f"key{i}" for i in range(6)]
START_MS = 1_000_000


def _ingest(store: WindowStore, rng: random.Random, now_ms: int) -> None:
    kind = rng.choice(KINDS)
    count = rng.randint(1, 8)
    keys = np.array([rng.randrange(len(NAMES)) for _ in range(count)], dtype=np.int64)
    raw = np.array([float(rng.randint(-5, 9)) for _ in range(count)])
    stamps = np.array([now_ms - rng.randrange(3_000) for _ in range(count)], dtype=np.int64)
    values: Any = raw
    relative = None
    if kind == "distinct":
        values = hash64_many(raw.astype(np.int64))
    elif kind == "set":
        values = [f"item{int(v) % 4}" for v in raw]
    elif kind == "gauge":
        relative = np.array([rng.random() < 0.3 for _ in range(count)])
    names = [f"{kind}-{n}" for n in NAMES]
    store.ingest(kind, names, keys, values, stamps, relative=relative)


def _remove(store: WindowStore, rng: random.Random, now_ms: int) -> None:
    key = f"set-{rng.choice(NAMES)}"
    store.remove(key, f"item{rng.randrange(4)}", now_ms - rng.randrange(2_000))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def canonical(delta: StoreDelta) -> tuple[Any, ...]:
    """The delta's content by names, independent of the order of its cells and lists."""
    kinds: dict[str, list[Any]] = {}
    for kind, cells in delta.cells.items():
        rows = []
        for index in range(len(cells)):
            replica = int(cells.replica[index])
            owned = np.flatnonzero(cells.entry_cell == index)
            rows.append(
                (
                    delta.keys[int(cells.key[index])],
                    int(cells.slice_start[index]),
                    delta.replicas[replica] if replica >= 0 else None,
                    tuple((n, _plain(c[index])) for n, c in sorted(cells.columns.items())),
                    tuple((n, c[owned].tolist()) for n, c in sorted(cells.entries.items())),
                )
            )
        kinds[kind] = sorted(rows, key=lambda row: row[:3])
    windows = sorted(
        (start, delta.replicas[replica], count)
        for start, replica, count in zip(
            delta.windows.slice_start.tolist(),
            delta.windows.replica.tolist(),
            delta.windows.count.tolist(),
            strict=True,
        )
    )
    return kinds, windows, sorted(delta.keys), sorted(delta.replicas)


def _check(store: WindowStore, versions: list[int], seed: int) -> None:
    for version in versions:
        fast, walked = store.delta_since(version), walk_delta_since(store, version)
        assert canonical(fast) == canonical(walked), f"seed={seed} version={version}"
        assert len(set(fast.keys)) == len(fast.keys), f"seed={seed}: keys named once"
        decoded = StoreDelta.from_bytes(fast.to_bytes())
        assert canonical(decoded) == canonical(walked), f"seed={seed} version={version}"


@given(
    seed=st.integers(0, 2**32 - 1),
    caps=st.sampled_from([None, (2, 2), (4, 8), (16, 64)]),
)
def test_delta_since_through_the_journal_equals_the_walk(
    seed: int, caps: tuple[int, int] | None
) -> None:
    rng = random.Random(seed)
    store = WindowStore("n1~0001", CONFIG)
    if caps is not None:
        store.journal = ChangeJournal(entries_max=caps[0], keys_max=caps[1])
    peers = [WindowStore(f"n{i}~0001", CONFIG) for i in (2, 3)]
    peer_marks = [0, 0]
    marks = [0]
    now_ms = START_MS
    for _ in range(40):
        now_ms += rng.choice((0, 0, 200, 700, 1_800))
        action = rng.random()
        if action < 0.45:
            _ingest(store, rng, now_ms)
        elif action < 0.55:
            _remove(store, rng, now_ms)
        elif action < 0.65:
            store.advance(now_ms)
        elif action < 0.9:
            which = rng.randrange(len(peers))
            peer = peers[which]
            for _ in range(rng.randint(1, 3)):
                _ingest(peer, rng, now_ms)
            peer.advance(now_ms)
            if rng.random() < 0.3:
                _remove(peer, rng, now_ms)
            delta = peer.full_state() if rng.random() < 0.3 else peer.delta_since(peer_marks[which])
            peer_marks[which] = peer.version
            store.merge(StoreDelta.from_bytes(delta.to_bytes()))
        elif action < 0.95:
            store = restore(snapshot(store))
            marks = [m for m in marks if m <= store.version]
        if rng.random() < 0.4:
            marks.append(store.version)
        if rng.random() < 0.5:
            arbitrary = [rng.randrange(store.version + 1) for _ in range(2)]
            _check(store, [*marks[-4:], *arbitrary, store.version], seed)
    _check(store, [*marks, 0, store.version], seed)


def test_the_journal_covers_recent_versions_and_forgets_old_ones() -> None:
    journal = ChangeJournal(entries_max=4, keys_max=100)
    for version in range(1, 8):
        journal.record(version, "counter", 0, np.array([version], dtype=np.int64))
    assert journal.floor > 0
    assert journal.since(journal.floor - 1, 100) is None
    changes = journal.since(6, 100)
    assert changes is not None
    candidates = changes["counter"][0]
    assert candidates is not None
    assert candidates.tolist() == [7]
    assert journal.since(journal.floor, 0) is None, "more entries than the limit: walk instead"


def test_a_big_batch_is_recorded_as_its_whole_slice() -> None:
    journal = ChangeJournal(entries_max=8, keys_max=16)
    journal.record(1, "gauge", 5_000, np.arange(10, dtype=np.int64))
    changes = journal.since(0, 8)
    assert changes == {"gauge": {5_000: None}}
