"""Durable Raft storage: a write-ahead log of checksummed records, plus a crash-simulating twin.

File-level rules: this module performs file I/O (the driver calls it; the core only reads through
the :class:`~crdtstream.raft.storage.Storage` protocol). Nothing is durable until :meth:`sync`
returns; the driver persists a whole ``Ready`` and syncs once before sending its messages, so
many proposals share one fsync (group commit).

On disk, a directory holds::

    metadata            the initial voter set (written once, atomically)
    <seq>-<index>.wal   segments of records: 4-byte length, 4-byte zlib.crc32, wire frame body
    <index>-<term>.snap snapshots, each one record, written to a temporary file, fsynced, renamed

A record body is an entry, a hard state, or a snapshot mark. A snapshot file counts only once a
mark naming it is durable in the log (as etcd does), so a crash between writing a snapshot and
syncing its mark cannot leave a snapshot the log does not know about. A mark of a snapshot
*received from the leader* also means "the log was reset here": entries before it are dropped on
replay. Each new segment starts with a copy of the newest mark and the hard state, so deleting
old segments after compaction never loses either.

Opening replays every record; a torn or corrupt tail of the last segment is cut at the first bad
record. A bad record anywhere else is damage beyond repair: :class:`StorageError`.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from crdtstream import wire
from crdtstream.errors import DecodeError, StorageError
from crdtstream.raft import types
from crdtstream.raft.storage import MemoryStorage, Storage
from crdtstream.raft.types import Entry, HardState, Ready, Snapshot

__all__ = [
    "SEGMENT_BYTES_DEFAULT",
    "DurableStorage",
    "WalStorage",
    "decode_records",
    "encode_record",
    "persist_ready",
]

SEGMENT_BYTES_DEFAULT = 8 << 20
"""A segment is closed and a new one begun once it grows past this size."""

RECORD_BYTES_MAX = 64 << 20
"""A length field above this is corruption, not a record."""

_HEADER = struct.Struct(">II")
_METADATA_FILE = "metadata"
_KEPT_SNAPSHOTS = 2

SyncFile = Callable[[int], None]
"""Makes a file descriptor durable; :func:`os.fsync` in production, a counter in tests."""


class DurableStorage(Storage, Protocol):
    """The Raft storage plus the write side the driver calls for every ``Ready``."""

    def append(self, entries: Sequence[Entry]) -> None:
        """Store entries, replacing any stored entries from the first one's index on."""
        ...

    def set_hard_state(self, state: HardState) -> None:
        """Record the hard state (term, vote, commit)."""
        ...

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the log with a snapshot received from the leader."""
        ...

    def create_snapshot(self, index: int, voters: Sequence[str], data: bytes) -> Snapshot:
        """Record a snapshot of the applied state at ``index``; the log stays until compacted."""
        ...

    def compact(self, compact_index: int) -> None:
        """Discard entries before ``compact_index``."""
        ...

    def sync(self) -> None:
        """Make every write so far durable."""
        ...


def persist_ready(storage: DurableStorage, ready: Ready) -> None:
    """Persist a Ready in the order that keeps the log consistent, then make it durable.

    The snapshot goes first: the Ready's entries follow it, and applying a snapshot after them
    would discard them.
    """
    if ready.snapshot is not None and not ready.snapshot.is_empty():
        storage.apply_snapshot(ready.snapshot)
    if ready.entries:
        storage.append(ready.entries)
    if ready.hard_state is not None:
        storage.set_hard_state(ready.hard_state)
    if ready.must_sync:
        storage.sync()


# -- records ------------------------------------------------------------------------------------


def encode_record(frame: bytes) -> bytes:
    """One record: big-endian length and CRC32 of ``frame``, then ``frame``."""
    return _HEADER.pack(len(frame), zlib.crc32(frame)) + frame


def decode_records(data: bytes) -> tuple[list[bytes], int]:
    """The valid records at the start of ``data`` and the offset of the first bad byte.

    The offset equals ``len(data)`` when every record is whole and its checksum matches.
    """
    frames: list[bytes] = []
    offset = 0
    while offset < len(data):
        if offset + _HEADER.size > len(data):
            break
        length, checksum = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        if length == 0 or length > RECORD_BYTES_MAX or start + length > len(data):
            break
        frame = data[start : start + length]
        if zlib.crc32(frame) != checksum:
            break
        frames.append(frame)
        offset = start + length
    return frames, offset


@dataclass(frozen=True, slots=True)
class _Mark:
    """A snapshot named in the log; ``received`` marks also reset the log to the snapshot."""

    index: int
    term: int
    received: bool


def _encode_mark(mark: _Mark) -> bytes:
    return wire.encode(wire.Tag.RAFT_WAL_SNAPSHOT_MARK, [mark.index, mark.term, mark.received])


def _mark_from(body: Any) -> _Mark:
    index, term, received = body
    if type(index) is not int or type(term) is not int or type(received) is not bool:
        raise TypeError(f"snapshot mark must be [int, int, bool], got {body!r}")
    return _Mark(index, term, received)


def _voters_from(body: Any) -> tuple[str, ...]:
    if not (isinstance(body, list) and all(isinstance(voter, str) for voter in body)):
        raise TypeError(f"metadata must be a list of voter ids, got {body!r}")
    return tuple(body)


def _decode_frame(frame: bytes) -> Entry | HardState | _Mark:
    """Turn one record body into what it holds; :class:`DecodeError` on anything else."""
    tag, body = wire.decode(frame)
    if tag == wire.Tag.RAFT_ENTRY:
        return types.decode_entry(frame)
    if tag == wire.Tag.RAFT_HARD_STATE:
        return types.decode_hard_state(frame)
    if tag == wire.Tag.RAFT_WAL_SNAPSHOT_MARK:
        return wire.build_checked(body, _mark_from)
    raise DecodeError(f"unexpected record tag {tag} in the write-ahead log")


# -- files --------------------------------------------------------------------------------------


def _segment_name(sequence: int, first_index: int) -> str:
    return f"{sequence:016x}-{first_index:016x}.wal"


def _snapshot_name(index: int, term: int) -> str:
    return f"{index:016x}-{term:016x}.snap"


def _parse_hex_pair(name: str, suffix: str) -> tuple[int, int] | None:
    if not name.endswith(suffix):
        return None
    try:
        first, second = name[: -len(suffix)].split("-")
        return int(first, 16), int(second, 16)
    except ValueError:
        return None


class _Files:
    """Directory operations with an injectable fsync, so tests can count and replace it."""

    def __init__(self, directory: Path, sync_file: SyncFile) -> None:
        self.directory = directory
        self.sync_file = sync_file

    def sync_directory(self) -> None:
        descriptor = os.open(self.directory, os.O_RDONLY)
        try:
            self.sync_file(descriptor)
        finally:
            os.close(descriptor)

    def write_atomically(self, name: str, data: bytes) -> None:
        """Temporary file, fsync, rename, fsync the directory: all of ``data`` or nothing."""
        temporary = self.directory / f"{name}.tmp"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(descriptor, data)
            self.sync_file(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, self.directory / name)
        self.sync_directory()

    def listing(self, suffix: str) -> list[tuple[int, int, str]]:
        """Files named ``<hex>-<hex><suffix>``, sorted by their numbers."""
        found = []
        for path in self.directory.iterdir():
            numbers = _parse_hex_pair(path.name, suffix)
            if numbers is not None:
                found.append((*numbers, path.name))
        return sorted(found)

    def remove(self, name: str) -> None:
        (self.directory / name).unlink(missing_ok=True)


@dataclass(slots=True)
class _Segment:
    """One segment file and the highest entry index ever written to it."""

    name: str
    sequence: int
    last_entry_index: int = 0


@dataclass(slots=True)
class _Replay:
    """What reading the directory found, before it becomes a :class:`MemoryStorage`."""

    segments: list[_Segment]
    records: list[Entry | HardState | _Mark]
    record_segments: list[int]


class WalStorage:
    """Raft storage on disk: reads served from memory, every write logged and made durable by
    :meth:`sync`. Open it with :meth:`open`; close it with :meth:`close`.
    """

    def __init__(
        self, files: _Files, memory: MemoryStorage, replay: _Replay, segment_bytes: int
    ) -> None:
        self._files = files
        self._memory = memory
        self._segments = replay.segments
        self._segment_bytes = segment_bytes
        self._buffer = bytearray()
        self._unsynced_records = 0
        self._failure: str | None = None
        self._descriptor = -1
        self._written_bytes = 0
        self._durable_mark: _Mark | None = None
        self._pending_mark: _Mark | None = None
        self._compacted_index = 0
        snapshot = memory.snapshot()
        if not snapshot.is_empty():
            self._durable_mark = _Mark(snapshot.meta.index, snapshot.meta.term, False)

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        voters: Sequence[str] = (),
        *,
        segment_bytes: int = SEGMENT_BYTES_DEFAULT,
        sync_file: SyncFile = os.fsync,
    ) -> WalStorage:
        """Open (or create with ``voters``) the log in ``directory`` and replay it.

        A torn or corrupt tail of the last segment is cut off; a fresh segment is started.
        Raises :class:`StorageError` when the directory is damaged beyond that.
        """
        if segment_bytes < 1024:
            raise ValueError(f"segment_bytes must be >= 1024, got {segment_bytes}")
        files = _Files(Path(directory), sync_file)
        try:
            files.directory.mkdir(parents=True, exist_ok=True)
            stored_voters = _load_metadata(files, voters)
            replay = _read_segments(files)
            memory = _rebuild(files, stored_voters, replay)
            storage = cls(files, memory, replay, segment_bytes=segment_bytes)
            storage._start_segment()
        except OSError as error:
            raise StorageError(f"write-ahead log in {directory}: {error}") from error
        return storage

    # -- reads (the Storage protocol) --

    def initial_state(self) -> tuple[HardState, tuple[str, ...]]:
        """The persisted hard state and the voter set of the stored snapshot."""
        return self._memory.initial_state()

    def entries(self, low: int, high: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``[low, high)``, at least one when any exists, bounded by ``max_bytes``."""
        return self._memory.entries(low, high, max_bytes)

    def term(self, index: int) -> int:
        """The term of the entry at ``index`` (valid from ``first_index() - 1``)."""
        return self._memory.term(index)

    def first_index(self) -> int:
        """The index of the first entry that may be read (snapshot index + 1)."""
        return self._memory.first_index()

    def last_index(self) -> int:
        """The index of the last stored entry (the snapshot index when there is none)."""
        return self._memory.last_index()

    def snapshot(self) -> Snapshot:
        """The most recent snapshot."""
        return self._memory.snapshot()

    # -- writes --

    def append(self, entries: Sequence[Entry]) -> None:
        """Log entries, replacing any stored entries from the first one's index on."""
        if not entries:
            return
        self._memory.append(entries)
        for entry in entries:
            self._buffer += encode_record(types.encode_entry(entry))
        self._unsynced_records += len(entries)
        segment = self._segments[-1]
        segment.last_entry_index = max(segment.last_entry_index, entries[-1].index)

    def set_hard_state(self, state: HardState) -> None:
        """Log the hard state (term, vote, commit); unchanged states are not written again."""
        if state == self._memory.initial_state()[0]:
            return
        self._memory.set_hard_state(state)
        self._buffer += encode_record(types.encode_hard_state(state))
        self._unsynced_records += 1

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the log with a snapshot from the leader: the file is durable at once, the
        mark that makes it count (and resets the log on replay) at the next :meth:`sync`.
        """
        self._memory.apply_snapshot(snapshot)
        self._save_snapshot(snapshot, received=True)

    def create_snapshot(self, index: int, voters: Sequence[str], data: bytes) -> Snapshot:
        """Save a snapshot of the applied state at ``index``; it counts after :meth:`sync`."""
        snapshot = self._memory.create_snapshot(index, voters, data)
        self._save_snapshot(snapshot, received=False)
        return snapshot

    def compact(self, compact_index: int) -> None:
        """Discard entries before ``compact_index``, which a snapshot must cover, and delete the
        segments a durable snapshot covers (now, or at the sync that makes the snapshot durable).
        """
        newest = self._memory.snapshot().meta.index
        if compact_index > newest:
            raise ValueError(f"compact index {compact_index} is beyond the snapshot at {newest}")
        self._memory.compact(compact_index)
        self._compacted_index = compact_index
        self._delete_covered_segments()

    def _delete_covered_segments(self) -> None:
        """Only a prefix of whole segments goes, never the current one, so replay order holds."""
        covered = 0 if self._durable_mark is None else self._durable_mark.index
        bound = min(self._compacted_index, covered)
        while len(self._segments) > 1 and self._segments[0].last_entry_index <= bound:
            self._files.remove(self._segments.pop(0).name)

    def sync(self) -> None:
        """Write buffered records and fsync once: every write since the last sync is durable.

        After a failed write or fsync the log may end in a torn record, so it refuses every
        later sync: reopening repairs the tail (what was never acknowledged is lost).
        """
        if self._failure is not None:
            raise StorageError(
                f"write-ahead log unusable after an earlier failure: {self._failure}"
            )
        try:
            if self._buffer:
                self._write_all(bytes(self._buffer))
                self._buffer.clear()
                self._files.sync_file(self._descriptor)
                self._unsynced_records = 0
            if self._pending_mark is not None:
                self._durable_mark, self._pending_mark = self._pending_mark, None
                self._remove_old_snapshots()
                self._delete_covered_segments()
            if self._written_bytes >= self._segment_bytes:
                self._start_segment()
        except OSError as error:
            self._failure = str(error)
            raise StorageError(f"write-ahead log sync failed: {error}") from error

    @property
    def unsynced_writes(self) -> int:
        """How many records a crash now would lose."""
        return self._unsynced_records

    def close(self) -> None:
        """Sync what is buffered and release the segment file."""
        if self._descriptor < 0:
            return
        try:
            self.sync()
        finally:
            os.close(self._descriptor)
            self._descriptor = -1

    def crash(self) -> None:
        """Stop as a killed process would: records not yet synced are lost, files stay."""
        self._buffer.clear()
        self._unsynced_records = 0
        if self._descriptor >= 0:
            os.close(self._descriptor)
            self._descriptor = -1

    def segment_names(self) -> list[str]:
        """The segment files in replay order (for tests and status)."""
        return [segment.name for segment in self._segments]

    # -- internals --

    def _save_snapshot(self, snapshot: Snapshot, *, received: bool) -> None:
        meta = snapshot.meta
        frame = encode_record(types.encode_snapshot(snapshot))
        try:
            self._files.write_atomically(_snapshot_name(meta.index, meta.term), frame)
        except OSError as error:
            raise StorageError(f"could not write snapshot at {meta.index}: {error}") from error
        self._pending_mark = _Mark(meta.index, meta.term, received)
        self._buffer += encode_record(_encode_mark(self._pending_mark))
        self._unsynced_records += 1

    def _remove_old_snapshots(self) -> None:
        assert self._durable_mark is not None
        marked = [
            (index, term, name)
            for index, term, name in self._files.listing(".snap")
            if index <= self._durable_mark.index
        ]
        for _, _, name in marked[:-_KEPT_SNAPSHOTS]:
            self._files.remove(name)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._descriptor, view)
            view = view[written:]
        self._written_bytes += len(data)

    def _start_segment(self) -> None:
        """Begin a new segment headed by the newest snapshot mark and the hard state, durable
        before anything else lands in it, so older segments may later be deleted.
        """
        sequence = self._segments[-1].sequence + 1 if self._segments else 0
        name = _segment_name(sequence, self._memory.last_index() + 1)
        descriptor = os.open(self._files.directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        if self._descriptor >= 0:
            os.close(self._descriptor)
        self._descriptor, self._written_bytes = descriptor, 0
        self._segments.append(_Segment(name, sequence))
        header = bytearray()
        if self._durable_mark is not None:
            copy = _Mark(self._durable_mark.index, self._durable_mark.term, False)
            header += encode_record(_encode_mark(copy))
        header += encode_record(types.encode_hard_state(self._memory.initial_state()[0]))
        self._write_all(bytes(header))
        self._files.sync_file(descriptor)
        self._files.sync_directory()


def _load_metadata(files: _Files, voters: Sequence[str]) -> tuple[str, ...]:
    """The voter set written when the log was created; ``voters`` on first open."""
    path = files.directory / _METADATA_FILE
    if not path.exists():
        frame = wire.encode(wire.Tag.RAFT_WAL_METADATA, list(voters))
        files.write_atomically(_METADATA_FILE, encode_record(frame))
        return tuple(voters)
    frames, _ = decode_records(path.read_bytes())
    if len(frames) != 1:
        raise StorageError(f"{path}: metadata record is damaged")
    try:
        return wire.decode_as(frames[0], wire.Tag.RAFT_WAL_METADATA, _voters_from)
    except DecodeError as error:
        raise StorageError(f"{path}: {error}") from error


def _read_segments(files: _Files) -> _Replay:
    """Every good record of every segment; the last segment's bad tail is cut off on disk."""
    for leftover in files.directory.glob("*.tmp"):
        leftover.unlink()
    listing = files.listing(".wal")
    replay = _Replay([], [], [])
    for position, (sequence, _, name) in enumerate(listing):
        path = files.directory / name
        data = path.read_bytes()
        frames, good_bytes = decode_records(data)
        segment = _Segment(name, sequence)
        offset = 0
        for frame in frames:
            try:
                record = _decode_frame(frame)
            except DecodeError:
                good_bytes = offset
                break
            offset += _HEADER.size + len(frame)
            replay.records.append(record)
            replay.record_segments.append(position)
            if isinstance(record, Entry):
                segment.last_entry_index = max(segment.last_entry_index, record.index)
        replay.segments.append(segment)
        if good_bytes < len(data):
            if position != len(listing) - 1:
                raise StorageError(
                    f"{path}: bad record at byte {good_bytes} before the last segment"
                )
            _truncate(files, path, good_bytes)
    return replay


def _truncate(files: _Files, path: Path, size: int) -> None:
    descriptor = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(descriptor, size)
        files.sync_file(descriptor)
    finally:
        os.close(descriptor)


def _newest_marked_snapshot(files: _Files, replay: _Replay) -> Snapshot | None:
    """The newest snapshot file that a durable mark names; unmarked newer files are removed."""
    marked = {(r.index, r.term) for r in replay.records if isinstance(r, _Mark)}
    for index, term, name in reversed(files.listing(".snap")):
        if (index, term) not in marked:
            files.remove(name)
            continue
        frames, _ = decode_records((files.directory / name).read_bytes())
        try:
            if len(frames) != 1:
                raise DecodeError("snapshot file must hold exactly one record")
            return types.decode_snapshot(frames[0])
        except DecodeError as error:
            raise StorageError(f"snapshot {name} is damaged: {error}") from error
    if marked:
        raise StorageError("the log names a snapshot but no snapshot file is left")
    return None


def _rebuild(files: _Files, voters: tuple[str, ...], replay: _Replay) -> MemoryStorage:
    """Replay the records on top of the newest marked snapshot."""
    memory = MemoryStorage(voters)
    base = _newest_marked_snapshot(files, replay)
    if base is not None:
        memory.apply_snapshot(base)
    for record in replay.records:
        if isinstance(record, Entry):
            if record.index < memory.first_index():
                continue
            if record.index > memory.last_index() + 1:
                raise StorageError(f"entry {record.index} leaves a gap after {memory.last_index()}")
            memory.append([record])
        elif isinstance(record, HardState):
            memory.set_hard_state(record)
        elif record.received:
            memory = _reset_to_snapshot(memory, record)
    return memory


def _reset_to_snapshot(memory: MemoryStorage, mark: _Mark) -> MemoryStorage:
    """A received snapshot discarded the whole log at the time: drop every entry replayed so far."""
    snapshot = memory.snapshot()
    if mark.index > snapshot.meta.index:
        raise StorageError(f"snapshot received at {mark.index} is missing")
    hard_state, voters = memory.initial_state()
    fresh = MemoryStorage(voters)
    if not snapshot.is_empty():
        fresh.apply_snapshot(snapshot)
    fresh.set_hard_state(hard_state)
    return fresh
