"""Batching, deltas, merges, the codec and snapshots of the store."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtstream.crdt.hashing import hash64_many
from crdtstream.errors import DecodeError, MergeError, StorageError
from crdtstream.storage.snapshot import read_snapshot, restore, snapshot, write_snapshot
from crdtstream.window.delta import StoreDelta
from crdtstream.window.store import WindowStore

from .support import CONFIG, canonical, normal

NAMES = [f"key{i}" for i in range(5)]
KINDS = ("counter", "gauge", "distinct", "distribution", "max", "min", "set")


def _events(seed: int, count: int) -> list[tuple[str, int, float, int]]:
    rng = random.Random(seed)
    return [
        (rng.choice(KINDS), rng.randrange(5), float(rng.randint(-9, 9)), rng.randrange(4_000))
        for _ in range(count)
    ]


def _ingest(store: WindowStore, events: list[tuple[str, int, float, int]]) -> None:
    """Ingest events grouped by kind, in one ingest call per kind, as a parser would."""
    for kind in KINDS:
        chosen = [e for e in events if e[0] == kind]
        if not chosen:
            continue
        keys = np.array([k for _, k, _, _ in chosen], dtype=np.int64)
        raw = np.array([v for _, _, v, _ in chosen])
        stamps = np.array([t for _, _, _, t in chosen], dtype=np.int64)
        values: object = raw
        if kind == "distinct":
            values = hash64_many(raw.astype(np.int64))
        elif kind == "set":
            values = [f"item{int(v) % 3}" for v in raw]
        names = [f"{kind}-{n}" for n in NAMES]
        store.ingest(kind, names, keys, values, stamps)  # type: ignore[arg-type]


@given(st.integers(0, 2**32), st.integers(1, 6))
def test_any_batching_in_any_order_gives_the_same_state(seed: int, parts: int) -> None:
    events = [e for e in _events(seed, 120) if e[0] not in ("gauge", "set")]
    whole = WindowStore("n1~0001", CONFIG)
    _ingest(whole, events)
    pieces = [events[i::parts] for i in range(parts)]
    random.Random(seed).shuffle(pieces)
    split = WindowStore("n1~0001", CONFIG)
    for piece in pieces:
        _ingest(split, piece)
    assert canonical(split) == canonical(whole), f"seed={seed}"


@settings(max_examples=40)  # each example builds several stores
@given(st.integers(0, 2**32))
def test_merged_deltas_equal_the_union_store(seed: int) -> None:
    events = _events(seed, 150)
    left, right = WindowStore("n1~0001", CONFIG), WindowStore("n2~0002", CONFIG)
    _ingest(left, events[:75])
    mark = right.version
    _ingest(right, events[75:])
    receiver = WindowStore("n3~0003", CONFIG)
    receiver.merge(StoreDelta.from_bytes(left.full_state().to_bytes()))
    receiver.merge(StoreDelta.from_bytes(right.delta_since(mark).to_bytes()))
    left.merge(right.full_state())
    assert canonical(receiver) == canonical(left), f"seed={seed}"
    assert receiver.merge(right.full_state()).is_empty(), f"seed={seed}: merge is idempotent"


@settings(max_examples=40)  # each example builds several stores
@given(st.integers(0, 2**32))
def test_delta_join_is_commutative_associative_idempotent(seed: int) -> None:
    deltas = []
    for index, part in enumerate(np.array_split(np.arange(90), 3)):
        store = WindowStore(f"n{index}~000{index}", CONFIG)
        _ingest(store, [_events(seed, 90)[i] for i in part])
        deltas.append(store.full_state())
    a, b, c = deltas

    def view(delta: StoreDelta) -> object:
        store = WindowStore("reader~0000", CONFIG)
        store.merge(delta)
        return canonical(store)

    assert view(a.join(b)) == view(b.join(a)), f"seed={seed}"
    assert view(a.join(b).join(c)) == view(a.join(b.join(c))), f"seed={seed}"
    assert view(a.join(a)) == view(a), f"seed={seed}"
    assert a.join(b).cell_count <= a.cell_count + b.cell_count


def test_merge_returns_only_novelty_and_deltas_hold_only_changes() -> None:
    source = WindowStore("n1~0001", CONFIG)
    _ingest(source, _events(7, 200))
    target = WindowStore("n2~0002", CONFIG)
    first = target.merge(source.full_state())
    assert first.cell_count == source.full_state().cell_count
    assert target.merge(source.full_state()).is_empty()
    mark = source.version
    source.add("counter-key0", "counter", 1.0, 10)
    delta = source.delta_since(mark)
    assert delta.cell_count == 1
    assert delta.keys == ["counter-key0"]
    assert target.merge(delta).cell_count == 1
    assert target.window_versions(0) == source.window_versions(0)


@settings(max_examples=40)  # each example builds several stores
@given(st.integers(0, 2**32), st.integers(1_000, 4_000))
def test_split_parts_fit_and_rebuild_the_whole(seed: int, max_bytes: int) -> None:
    store = WindowStore("n1~0001", CONFIG)
    _ingest(store, [e for e in _events(seed, 150) if e[0] != "distinct"])
    whole = store.full_state()
    parts = whole.split(max_bytes)
    assert all(len(p.to_bytes()) <= max_bytes for p in parts), f"seed={seed}"
    receiver = WindowStore("n2~0002", CONFIG)
    for part in reversed(parts):
        receiver.merge(StoreDelta.from_bytes(part.to_bytes()))
    assert canonical(receiver) == canonical(store), f"seed={seed}"


def test_mismatched_parameters_refuse_to_merge() -> None:
    store = WindowStore("n1~0001", CONFIG)
    other = StoreDelta(distinct_precision=10, relative_accuracy=0.01)
    with pytest.raises(MergeError):
        store.merge(other)


@given(st.integers(0, 2**32))
def test_corrupt_delta_bytes_raise_decode_error_only(seed: int) -> None:
    rng = random.Random(seed)
    store = WindowStore("n1~0001", CONFIG)
    _ingest(store, _events(seed, 40))
    data = bytearray(store.full_state().to_bytes())
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    data = data[: rng.randint(0, len(data))] if rng.random() < 0.3 else data
    with contextlib.suppress(DecodeError):
        StoreDelta.from_bytes(bytes(data))


def test_snapshot_round_trip(tmp_path: Path) -> None:
    store = WindowStore("n1~0001", CONFIG)
    _ingest(store, _events(3, 300))
    store.add("counter-key0", "counter", 5.0, 50)
    path = tmp_path / "store.snapshot"
    write_snapshot(store, path)
    loaded = read_snapshot(path)
    assert canonical(loaded) == canonical(store)
    assert loaded.version == store.version
    assert loaded.delta_since(store.version - 1).cell_count == store.full_state().cell_count
    assert loaded.late_by_key == store.late_by_key
    assert restore(snapshot(loaded)).kind_keys == store.kind_keys
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(StorageError):
        read_snapshot(path)


def _mutate(body: object, rng: random.Random) -> object:
    """Replace one randomly chosen leaf of a nested list/dict body with junk of another shape."""
    junk: list[object] = [
        None,
        -1,
        2**63 - 1,
        "x",
        b"\x00",
        1.5,
        [],
        {},
        np.zeros(3, np.int64),
        np.ones(2, np.uint8),
    ]
    if isinstance(body, dict) and body and rng.random() < 0.8:
        key = rng.choice(list(body))
        return {**body, key: _mutate(body[key], rng)}
    if isinstance(body, list) and body and rng.random() < 0.8:
        index = rng.randrange(len(body))
        return [*body[:index], _mutate(body[index], rng), *body[index + 1 :]]
    if isinstance(body, np.ndarray) and len(body) and rng.random() < 0.5:
        changed = body.copy()
        changed.flat[rng.randrange(changed.size)] = rng.choice([-1, 2**31, 255])
        return changed
    return rng.choice(junk)


@given(st.integers(0, 2**32))
def test_structurally_wrong_bodies_raise_decode_error_only(seed: int) -> None:
    from crdtstream import wire

    rng = random.Random(seed)
    store = WindowStore("n1~0001", CONFIG)
    _ingest(store, _events(seed, 40))
    body = _mutate(store.full_state().to_wire(), rng)
    with contextlib.suppress(DecodeError):
        decoded = StoreDelta.from_bytes(wire.encode(wire.Tag.WINDOW_DELTA, body))
        WindowStore("n2~0002", CONFIG).merge(decoded)  # what decodes must also merge cleanly


@settings(max_examples=30)
@given(st.integers(0, 2**32))
def test_window_reads_agree_with_key_reads(seed: int) -> None:
    stores = [WindowStore(f"n{i}~000{i}", CONFIG) for i in range(2)]
    for index, store in enumerate(stores):
        _ingest(store, _events(seed + index, 80))
    stores[0].merge(stores[1].full_state())
    by_key = {
        (w.start_ms, key): normal(w.value)
        for key in stores[0].keys
        for w in stores[0].read_key(key)
    }
    by_window = {
        (start, key): value
        for start, values in canonical(stores[0]).items()
        for key, value in values.items()
    }
    assert by_window == by_key, f"seed={seed}"


def test_key_state_carries_exactly_one_keys_cells_from_every_replica() -> None:
    for seed in range(4):
        stores = [WindowStore(f"n{i}~0001", CONFIG) for i in range(3)]
        for index, store in enumerate(stores):
            _ingest(store, _events(seed * 10 + index, 150))
        merged = WindowStore("m~0001", CONFIG)
        for store in stores:
            merged.merge(store.full_state())
        for key in list(merged.keys):
            state = merged.key_state(key)
            assert state.keys == [key], f"seed={seed} key={key}"
            reader = WindowStore("r~0001", CONFIG)
            reader.merge(StoreDelta.from_bytes(state.to_bytes()))
            assert list(reader.keys) == [key], f"seed={seed} key={key}"
            mine = [(w.start_ms, normal(w.value)) for w in reader.read_key(key)]
            theirs = [(w.start_ms, normal(w.value)) for w in merged.read_key(key)]
            assert mine == theirs, f"seed={seed} key={key}"
    assert WindowStore("n~0001", CONFIG).key_state("never").is_empty()


def test_deltas_since_each_version_carry_every_kind_of_change() -> None:
    """A follower fed only ``delta_since(version before)`` after every step (ingest of each
    kind, set removals, merges from another replica) ends equal to the leader: no way of
    changing a cell may go unseen by ``delta_since``."""
    for seed in range(6):
        rng = random.Random(seed)
        leader, other = WindowStore("n1~0001", CONFIG), WindowStore("n2~0001", CONFIG)
        follower = WindowStore("f~0001", CONFIG)
        for step in range(40):
            before = leader.version
            action = rng.random()
            if action < 0.5:
                _ingest(leader, _events(seed * 100 + step, rng.randrange(1, 6)))
            elif action < 0.75:
                leader.remove(f"set-{rng.choice(NAMES)}", f"item{rng.randrange(3)}", 0)
                leader.remove(f"set-{rng.choice(NAMES)}", f"item{rng.randrange(3)}", 3_000)
            else:
                _ingest(other, _events(seed * 100 + step + 50, rng.randrange(1, 6)))
                leader.merge(other.full_state())
            follower.merge(StoreDelta.from_bytes(leader.delta_since(before).to_bytes()))
            assert canonical(follower) == canonical(leader), f"seed={seed} step={step}"
