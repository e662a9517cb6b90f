"""Durable Raft storage: a write-ahead log of checksummed records (an in-memory twin that can
crash is ``tests/crashable.py``; the format and replay are in :mod:`.wal_format`).

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
from collections.abc import Sequence
from pathlib import Path

from crdtstream.errors import StorageError
from crdtstream.raft import types
from crdtstream.raft.storage import DurableStorage, MemoryStorage, persist_ready
from crdtstream.raft.types import Entry, HardState, Snapshot
from crdtstream.storage.wal_format import (
    Files,
    Mark,
    Replay,
    Segment,
    SyncFile,
    decode_records,
    encode_mark,
    encode_record,
    load_metadata,
    read_segments,
    rebuild,
    segment_name,
    snapshot_name,
)

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

_KEPT_SNAPSHOTS = 2


class WalStorage:
    """Raft storage on disk: reads served from memory, every write logged and made durable by
    :meth:`sync`. Open it with :meth:`open`; close it with :meth:`close`.
    """

    def __init__(
        self, files: Files, memory: MemoryStorage, replay: Replay, segment_bytes: int
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
        self._durable_mark: Mark | None = None
        self._pending_mark: Mark | None = None
        self._compacted_index = 0
        snapshot = memory.snapshot()
        if not snapshot.is_empty():
            self._durable_mark = Mark(snapshot.meta.index, snapshot.meta.term, False)

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
        files = Files(Path(directory), sync_file)
        try:
            files.directory.mkdir(parents=True, exist_ok=True)
            stored_voters = load_metadata(files, voters)
            replay = read_segments(files)
            memory = rebuild(files, stored_voters, replay)
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
            self._files.write_atomically(snapshot_name(meta.index, meta.term), frame)
        except OSError as error:
            raise StorageError(f"could not write snapshot at {meta.index}: {error}") from error
        self._pending_mark = Mark(meta.index, meta.term, received)
        self._buffer += encode_record(encode_mark(self._pending_mark))
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
        name = segment_name(sequence, self._memory.last_index() + 1)
        descriptor = os.open(self._files.directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        if self._descriptor >= 0:
            os.close(self._descriptor)
        self._descriptor, self._written_bytes = descriptor, 0
        self._segments.append(Segment(name, sequence))
        header = bytearray()
        if self._durable_mark is not None:
            copy = Mark(self._durable_mark.index, self._durable_mark.term, False)
            header += encode_record(encode_mark(copy))
        header += encode_record(types.encode_hard_state(self._memory.initial_state()[0]))
        self._write_all(bytes(header))
        self._files.sync_file(descriptor)
        self._files.sync_directory()
