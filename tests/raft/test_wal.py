"""The write-ahead log: round trips, torn and corrupt tails, snapshots, compaction, group commit."""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtstream.errors import StorageError
from crdtstream.raft.storage import MemoryStorage
from crdtstream.raft.types import Entry, HardState, Ready, Snapshot, SnapshotMeta, encode_entry
from crdtstream.storage.wal import WalStorage, decode_records, encode_record, persist_ready
from tests.crashable import CrashableStorage

VOTERS = ("a", "b", "c")


def entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [
        Entry(term, index, data=f"command {index}".encode()) for index in range(first, last + 1)
    ]


class FsyncCounter:
    """Counts fsyncs and still performs them, so durability is unchanged."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, descriptor: int) -> None:
        self.calls += 1
        os.fsync(descriptor)


@pytest.fixture
def wal_dir(tmp_path: Path) -> Path:
    return tmp_path / "wal"


@pytest.fixture
def opened(wal_dir: Path) -> Iterator[list[WalStorage]]:
    """Every storage a test opens, closed at the end even on failure."""
    storages: list[WalStorage] = []
    yield storages
    for storage in storages:
        storage.crash()


def open_wal(storages: list[WalStorage], directory: Path, **options: object) -> WalStorage:
    storage = WalStorage.open(directory, VOTERS, **options)  # type: ignore[arg-type]
    storages.append(storage)
    return storage


def all_entries(storage: WalStorage) -> list[Entry]:
    if storage.last_index() < storage.first_index():
        return []
    return storage.entries(storage.first_index(), storage.last_index() + 1)


def test_records_round_trip_and_stop_at_the_first_bad_byte() -> None:
    frames = [b"\x01\x00first", b"\x01\x00second record"]
    data = b"".join(encode_record(frame) for frame in frames)
    assert decode_records(data) == (frames, len(data))
    assert decode_records(data[:-1]) == (frames[:1], len(encode_record(frames[0])))
    assert decode_records(b"") == ([], 0)


def test_entries_and_hard_state_survive_a_reopen(wal_dir: Path, opened: list[WalStorage]) -> None:
    storage = open_wal(opened, wal_dir)
    storage.append(entries(1, 5))
    storage.set_hard_state(HardState(term=1, vote="a", commit=3))
    storage.sync()
    storage.close()
    reopened = open_wal(opened, wal_dir)
    assert all_entries(reopened) == entries(1, 5)
    assert reopened.initial_state() == (HardState(1, "a", 3), VOTERS)
    assert reopened.term(3) == 1
    assert (reopened.first_index(), reopened.last_index()) == (1, 5)


def test_unsynced_writes_are_lost_in_a_crash(wal_dir: Path, opened: list[WalStorage]) -> None:
    storage = open_wal(opened, wal_dir)
    storage.append(entries(1, 3))
    storage.set_hard_state(HardState(term=1, vote="b", commit=0))
    storage.sync()
    storage.append(entries(4, 6))
    storage.set_hard_state(HardState(term=2, vote="c", commit=2))
    storage.crash()
    reopened = open_wal(opened, wal_dir)
    assert all_entries(reopened) == entries(1, 3)
    assert reopened.initial_state()[0] == HardState(1, "b", 0)


def test_conflicting_append_replaces_the_suffix(wal_dir: Path, opened: list[WalStorage]) -> None:
    storage = open_wal(opened, wal_dir)
    storage.append(entries(1, 6, term=1))
    storage.sync()
    storage.append(entries(4, 5, term=2))
    storage.sync()
    storage.close()
    reopened = open_wal(opened, wal_dir)
    assert all_entries(reopened) == entries(1, 3, term=1) + entries(4, 5, term=2)


def last_segment(directory: Path) -> Path:
    segments = sorted(path for path in directory.iterdir() if path.suffix == ".wal")
    with_records = [path for path in segments if path.stat().st_size > 0]
    return with_records[-1]


def written_log(directory: Path, opened: list[WalStorage]) -> tuple[Path, int]:
    """A closed log of entries 1..4; returns its segment and the size of its last record."""
    storage = open_wal(opened, directory)
    storage.append(entries(1, 4))
    storage.sync()
    storage.crash()
    segment = last_segment(directory)
    last_record = len(encode_record(encode_entry(entries(4, 4)[0])))
    return segment, last_record


def test_torn_tail_is_cut_at_every_byte_offset_of_the_last_record(
    tmp_path: Path, opened: list[WalStorage]
) -> None:
    pristine = tmp_path / "pristine"
    segment, last_record = written_log(pristine, opened)
    full_size = segment.stat().st_size
    for kept in range(last_record):
        copy = tmp_path / f"torn-{kept}"
        shutil.copytree(pristine, copy)
        torn = copy / segment.name
        os.truncate(torn, full_size - last_record + kept)
        storage = open_wal(opened, copy)
        assert all_entries(storage) == entries(1, 3), f"kept {kept} bytes of the last record"
        assert torn.stat().st_size == full_size - last_record
        storage.append(entries(4, 5, term=2))
        storage.sync()
        storage.close()
        assert all_entries(open_wal(opened, copy)) == entries(1, 3) + entries(4, 5, term=2)


@pytest.mark.parametrize("record_from_end", [0, 1, 2])
def test_corrupt_checksum_truncates_from_that_record(
    wal_dir: Path, opened: list[WalStorage], record_from_end: int
) -> None:
    segment, record_bytes = written_log(wal_dir, opened)
    data = bytearray(segment.read_bytes())
    position = len(data) - record_bytes * record_from_end - 3
    data[position] ^= 0xFF
    segment.write_bytes(bytes(data))
    storage = open_wal(opened, wal_dir)
    assert all_entries(storage) == entries(1, 3 - record_from_end)


def test_corruption_before_the_last_segment_is_refused(
    wal_dir: Path, opened: list[WalStorage]
) -> None:
    segment, _ = written_log(wal_dir, opened)
    open_wal(opened, wal_dir).close()  # a later segment now exists
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF
    segment.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="before the last segment"):
        WalStorage.open(wal_dir, VOTERS)


def test_group_commit_shares_one_fsync(wal_dir: Path, opened: list[WalStorage]) -> None:
    counter = FsyncCounter()
    storage = open_wal(opened, wal_dir, sync_file=counter)
    before = counter.calls
    for batch in range(10):
        storage.append(entries(batch * 10 + 1, batch * 10 + 10))
        storage.set_hard_state(HardState(term=1, vote="a", commit=batch * 10))
    storage.sync()
    assert counter.calls == before + 1
    storage.sync()
    assert counter.calls == before + 1, "a sync with nothing new must not fsync"


def test_persist_ready_syncs_once_and_puts_the_snapshot_first(
    wal_dir: Path, opened: list[WalStorage]
) -> None:
    counter = FsyncCounter()
    storage = open_wal(opened, wal_dir, sync_file=counter)
    snapshot = Snapshot(SnapshotMeta(10, 2, VOTERS), b"image")
    ready = Ready(
        hard_state=HardState(2, "a", 10), entries=tuple(entries(11, 12, 2)), snapshot=snapshot
    )
    before = counter.calls
    persist_ready(storage, ready)
    # the snapshot file takes its own fsyncs (file and directory); the log takes one
    assert counter.calls == before + 3
    storage.crash()
    reopened = open_wal(opened, wal_dir)
    assert reopened.snapshot() == snapshot
    assert all_entries(reopened) == entries(11, 12, 2)
    assert reopened.initial_state()[0] == HardState(2, "a", 10)


def test_compaction_deletes_segments_covered_by_a_snapshot(
    wal_dir: Path, opened: list[WalStorage]
) -> None:
    storage = open_wal(opened, wal_dir, segment_bytes=1024)
    for batch in range(20):
        storage.append(entries(batch * 10 + 1, batch * 10 + 10))
        storage.sync()
    segments_before = storage.segment_names()
    assert len(segments_before) > 4
    with pytest.raises(ValueError, match="beyond the snapshot"):
        storage.compact(150)
    storage.create_snapshot(150, VOTERS, b"state at 150")
    storage.compact(150)  # the snapshot is not durable yet: no segment may go
    assert storage.segment_names() == segments_before
    storage.sync()
    remaining = storage.segment_names()
    assert len(remaining) < len(segments_before)
    assert set(remaining) < set(segments_before)
    assert {path.name for path in wal_dir.glob("*.wal")} == set(remaining)
    storage.close()
    reopened = open_wal(opened, wal_dir)
    assert reopened.snapshot().meta == SnapshotMeta(150, 1, VOTERS)
    assert reopened.snapshot().data == b"state at 150"
    assert all_entries(reopened) == entries(151, 200)


def test_received_snapshot_resets_the_log(wal_dir: Path, opened: list[WalStorage]) -> None:
    storage = open_wal(opened, wal_dir)
    storage.append(entries(1, 20, term=1))
    storage.sync()
    storage.apply_snapshot(Snapshot(SnapshotMeta(10, 2, VOTERS), b"leader image"))
    storage.append(entries(11, 12, term=2))
    storage.sync()
    storage.create_snapshot(12, VOTERS, b"local image")
    storage.sync()
    storage.close()
    reopened = open_wal(opened, wal_dir)
    assert reopened.last_index() == 12
    assert reopened.snapshot().data == b"local image"
    assert len(list(wal_dir.glob("*.snap"))) == 2


def test_snapshot_without_a_durable_mark_is_ignored(
    wal_dir: Path, opened: list[WalStorage]
) -> None:
    storage = open_wal(opened, wal_dir)
    storage.append(entries(1, 20, term=1))
    storage.sync()
    storage.apply_snapshot(Snapshot(SnapshotMeta(10, 2, VOTERS), b"leader image"))
    storage.crash()
    reopened = open_wal(opened, wal_dir)
    assert reopened.snapshot().is_empty()
    assert all_entries(reopened) == entries(1, 20)
    assert list(wal_dir.glob("*.snap")) == []


def test_old_snapshots_are_removed(wal_dir: Path, opened: list[WalStorage]) -> None:
    storage = open_wal(opened, wal_dir)
    storage.append(entries(1, 40))
    for index in (10, 20, 30, 40):
        storage.create_snapshot(index, VOTERS, f"image {index}".encode())
        storage.sync()
    names = sorted(path.name for path in wal_dir.glob("*.snap"))
    assert len(names) == 2
    assert names[-1].startswith(f"{40:016x}")


def test_damaged_metadata_is_refused(wal_dir: Path, opened: list[WalStorage]) -> None:
    open_wal(opened, wal_dir).close()
    (wal_dir / "metadata").write_bytes(b"garbage")
    with pytest.raises(StorageError, match="metadata"):
        WalStorage.open(wal_dir, VOTERS)


# A model check: random operations against the in-memory storage, with reopens.

OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["append", "hard", "snapshot", "received", "sync", "reopen", "crash"]),
        st.integers(0, 1 << 30),
    ),
    max_size=30,
)


@settings(max_examples=40)
@given(operations=OPERATIONS)
def test_wal_matches_the_memory_model_across_reopens(
    tmp_path_factory: pytest.TempPathFactory, operations: list[tuple[str, int]]
) -> None:
    directory = tmp_path_factory.mktemp("model")
    storages: list[WalStorage] = []
    try:
        run_model(directory, storages, operations)
    finally:
        for storage in storages:
            storage.crash()


def run_model(
    directory: Path, storages: list[WalStorage], operations: list[tuple[str, int]]
) -> None:
    """Drive the log, a crashable twin and a hand-kept model (visible + durable) in lockstep."""
    storage = open_wal(storages, directory, segment_bytes=1024)
    twin = CrashableStorage(VOTERS)
    durable = MemoryStorage(VOTERS)
    model = MemoryStorage(VOTERS)
    pending: list[tuple[str, object]] = []
    term = 1
    for name, seed in operations:
        rng = random.Random(seed)
        if name == "append":
            first = rng.randint(max(model.first_index(), 1), model.last_index() + 1)
            term += rng.random() < 0.3
            batch = entries(first, first + rng.randint(0, 5), term)
            for target in (storage, twin, model):
                target.append(batch)
            pending.append(("append", batch))
        elif name == "hard":
            state = HardState(term, rng.choice(VOTERS), rng.randint(0, 5))
            for target in (storage, twin, model):
                target.set_hard_state(state)
            pending.append(("hard", state))
        elif name == "snapshot" and model.last_index() > model.snapshot().meta.index:
            index = rng.randint(model.snapshot().meta.index + 1, model.last_index())
            for target in (storage, twin, model):
                snapshot = target.create_snapshot(index, VOTERS, b"local")
            pending.append(("snapshot", snapshot))
            if rng.random() < 0.5:
                for target in (storage, twin, model):
                    target.compact(index)
        elif name == "received":
            term += 1
            index = model.last_index() + rng.randint(-2, 3)
            snapshot = Snapshot(SnapshotMeta(index, term, VOTERS), b"x")
            if snapshot.meta.index <= model.snapshot().meta.index:
                continue
            for target in (storage, twin, model):
                target.apply_snapshot(snapshot)
            pending.append(("received", snapshot))
        elif name == "sync":
            storage.sync()
            twin.sync()
            replay(durable, pending)
        elif name in ("reopen", "crash"):
            if name == "reopen":
                storage.close()
                twin.sync()
                replay(durable, pending)
            else:
                storage.crash()
                pending.clear()
            twin.crash()
            storage = open_wal(storages, directory, segment_bytes=1024)
            model = durable_copy(durable)
            assert_same(storage, durable)
            assert_same(twin, durable)
    storage.close()
    replay(durable, pending)
    assert_same(open_wal(storages, directory), durable)


def replay(durable: MemoryStorage, pending: list[tuple[str, object]]) -> None:
    for kind, value in pending:
        if kind == "append":
            durable.append(value)  # type: ignore[arg-type]
        elif kind == "hard":
            durable.set_hard_state(value)  # type: ignore[arg-type]
        elif kind == "snapshot":
            snapshot: Snapshot = value  # type: ignore[assignment]
            durable.create_snapshot(snapshot.meta.index, snapshot.meta.voters, snapshot.data)
        else:
            durable.apply_snapshot(value)  # type: ignore[arg-type]
    pending.clear()


def durable_copy(durable: MemoryStorage) -> MemoryStorage:
    copy = MemoryStorage(VOTERS)
    if not durable.snapshot().is_empty():
        copy.apply_snapshot(durable.snapshot())
    first = durable.snapshot().meta.index + 1
    if durable.last_index() >= first:
        copy.append(durable.entries(first, durable.last_index() + 1))
    copy.set_hard_state(durable.initial_state()[0])
    return copy


def assert_same(storage: WalStorage | CrashableStorage, durable: MemoryStorage) -> None:
    assert storage.initial_state() == durable.initial_state()
    assert storage.snapshot() == durable.snapshot()
    assert storage.last_index() == durable.last_index()
    first = storage.snapshot().meta.index + 1
    if storage.last_index() >= first:
        assert storage.entries(first, storage.last_index() + 1) == durable.entries(
            first, durable.last_index() + 1
        )


def test_crashable_storage_loses_only_unsynced_writes() -> None:
    storage = CrashableStorage(VOTERS)
    storage.append(entries(1, 3))
    storage.set_hard_state(HardState(1, "a", 1))
    storage.sync()
    storage.append(entries(4, 5))
    storage.set_hard_state(HardState(2, "b", 4))
    assert storage.last_index() == 5
    assert storage.unsynced_writes == 2
    storage.crash()
    assert storage.last_index() == 3
    assert storage.initial_state() == (HardState(1, "a", 1), VOTERS)
    assert storage.sync_count == 1
    storage.sync()
    assert storage.sync_count == 1, "an empty sync is not counted"


def test_a_failed_fsync_makes_the_log_refuse_further_syncs(
    wal_dir: Path, opened: list[WalStorage]
) -> None:
    failing = {"now": False}

    def sync_file(descriptor: int) -> None:
        if failing["now"]:
            raise OSError(5, "Input/output error")
        os.fsync(descriptor)

    storage = open_wal(opened, wal_dir, sync_file=sync_file)
    storage.append(entries(1, 2))
    storage.sync()
    storage.append(entries(3, 3))
    assert storage.unsynced_writes == 1
    failing["now"] = True
    with pytest.raises(StorageError, match="Input/output error"):
        storage.sync()
    failing["now"] = False
    with pytest.raises(StorageError, match="unusable"):
        storage.sync()
    storage.crash()
    assert all_entries(open_wal(opened, wal_dir))[:2] == entries(1, 2)


def test_a_half_written_snapshot_is_discarded_on_open(
    wal_dir: Path, opened: list[WalStorage]
) -> None:
    storage = open_wal(opened, wal_dir)
    storage.append(entries(1, 5))
    storage.create_snapshot(5, VOTERS, b"image")
    storage.sync()
    storage.close()
    (wal_dir / "0000000000000009-0000000000000001.snap.tmp").write_bytes(b"half a snap")
    reopened = open_wal(opened, wal_dir)
    assert reopened.snapshot().data == b"image"
    assert not list(wal_dir.glob("*.tmp"))


def test_a_damaged_snapshot_named_by_the_log_is_refused(
    wal_dir: Path, opened: list[WalStorage]
) -> None:
    storage = open_wal(opened, wal_dir)
    storage.append(entries(1, 5))
    storage.create_snapshot(5, VOTERS, b"image")
    storage.sync()
    storage.close()
    (snapshot,) = wal_dir.glob("*.snap")
    data = bytearray(snapshot.read_bytes())
    data[-1] ^= 0xFF
    snapshot.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="damaged"):
        WalStorage.open(wal_dir, VOTERS)
