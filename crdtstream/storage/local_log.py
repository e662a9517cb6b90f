"""The local write-ahead log of eventual and quorum writes, and the disk it lives on.

What is logged is the store's applied state change: the delta of every cell and window count
changed since the last sync (``WindowStore.delta_since``), one record per sync, in the Raft
log's record format (:func:`~crdtstream.storage.wal_format.encode_record`: length, CRC32, wire
frame). A delta merges idempotently, so replaying a record twice (say, over a snapshot written
just before a crash that left the old log behind) changes nothing.

Rules the driver keeps (see :class:`~crdtstream.node.Node`):

- group commit: the records of one pump are buffered by :meth:`LocalLog.append` and made
  durable by one :meth:`LocalLog.sync`; a write is acknowledged only after that sync;
- nothing leaves the node before it is durable: the log is synced before any frame is sent
  when the store changed since the last sync, so every state a peer holds under this node's
  replica slot is in the snapshot or the log, and a restarted node may resume its slot;
- at a snapshot, the snapshot is written durably first, then :meth:`LocalLog.restart` begins a
  new segment and deletes the old ones.

The disk is a small protocol with two implementations running the same log code:
:class:`DirectoryDisk` (files, ``os.fsync``) and :class:`MemoryDisk` (a dict that holds exactly
what a crash leaves: only synced bytes, since unsynced ones stay in the log's buffer, which a
crash discards with the process). Simulations crash a node by dropping it and keeping its
:class:`MemoryDisk`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from crdtstream.errors import StorageError
from crdtstream.storage.files import SyncFile, sync_directory, write_atomically
from crdtstream.storage.wal_format import decode_records, encode_record

__all__ = ["LOG_SUFFIX", "DirectoryDisk", "Disk", "LocalLog", "MemoryDisk"]

LOG_SUFFIX = ".log"
"""Segments of the local log are named ``<16 hex digits of their sequence>.log``."""


class Disk(Protocol):
    """Named files that survive a crash once written (``write_atomically``, ``append_durably``
    and ``remove`` return only once the change is durable)."""

    def read(self, name: str) -> bytes | None:
        """The file's bytes, None when there is no such file."""
        ...

    def write_atomically(self, name: str, data: bytes) -> None:
        """Replace the file with ``data``: all of it or nothing, durable on return."""
        ...

    def append_durably(self, name: str, data: bytes) -> None:
        """Append ``data`` to the file (created if missing) and fsync it."""
        ...

    def names(self, suffix: str) -> list[str]:
        """The files whose name ends with ``suffix``, sorted."""
        ...

    def remove(self, name: str) -> None:
        """Delete the file if it exists, durably."""
        ...


_SYNC_DATA: SyncFile = getattr(os, "fdatasync", os.fsync)
"""An append needs its data and the file size durable, not the modification time: fdatasync
(where the platform has it) skips the inode timestamps and costs about a third of an fsync."""


class DirectoryDisk:
    """A :class:`Disk` in a directory; ``sync_file`` is ``os.fsync`` (``os.fdatasync`` for
    appends) unless a test counts it."""

    def __init__(self, directory: Path, sync_file: SyncFile | None = None) -> None:
        """Use ``directory`` (created if missing)."""
        self.directory = directory
        self._sync_file: SyncFile = os.fsync if sync_file is None else sync_file
        self._sync_data: SyncFile = _SYNC_DATA if sync_file is None else sync_file
        self._appending: dict[str, int] = {}
        directory.mkdir(parents=True, exist_ok=True)

    def read(self, name: str) -> bytes | None:
        """The file's bytes, None when there is no such file."""
        path = self.directory / name
        return path.read_bytes() if path.exists() else None

    def write_atomically(self, name: str, data: bytes) -> None:
        """Temporary file, fsync, rename, fsync the directory."""
        write_atomically(self.directory / name, data, self._sync_file)

    def append_durably(self, name: str, data: bytes) -> None:
        """Append and fsync; a new file's directory entry is fsynced once, at creation."""
        descriptor = self._appending.get(name)
        if descriptor is None:
            path = self.directory / name
            created = not path.exists()
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._appending[name] = descriptor
            if created:
                sync_directory(self.directory, self._sync_file)
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        self._sync_data(descriptor)

    def names(self, suffix: str) -> list[str]:
        """The files whose name ends with ``suffix``, sorted."""
        return sorted(path.name for path in self.directory.iterdir() if path.name.endswith(suffix))

    def remove(self, name: str) -> None:
        """Close it if open, delete it, fsync the directory."""
        descriptor = self._appending.pop(name, None)
        if descriptor is not None:
            os.close(descriptor)
        (self.directory / name).unlink(missing_ok=True)
        sync_directory(self.directory, self._sync_file)

    def close(self) -> None:
        """Release the files open for appending."""
        for descriptor in self._appending.values():
            os.close(descriptor)
        self._appending.clear()


class MemoryDisk:
    """A :class:`Disk` in memory holding only what is durable, so it is exactly what a crashed
    node finds on restart; counts its syncs (``syncs``) so tests can check group commit."""

    def __init__(self) -> None:
        """An empty disk."""
        self.files: dict[str, bytearray] = {}
        """Each file's durable bytes; appends extend them in place (a copy per append would
        make a long log quadratic)."""
        self.syncs = 0

    def read(self, name: str) -> bytes | None:
        """The file's bytes, None when there is no such file."""
        data = self.files.get(name)
        return None if data is None else bytes(data)

    def write_atomically(self, name: str, data: bytes) -> None:
        """Replace the file (one sync)."""
        self.files[name] = bytearray(data)
        self.syncs += 1

    def append_durably(self, name: str, data: bytes) -> None:
        """Append to the file (one sync)."""
        self.files.setdefault(name, bytearray()).extend(data)
        self.syncs += 1

    def copy(self) -> MemoryDisk:
        """What a node would find if it crashed now: every file as it is, apart from this disk
        (later writes to either leave the other as it was)."""
        image = MemoryDisk()
        image.files = {name: bytearray(data) for name, data in self.files.items()}
        return image

    def names(self, suffix: str) -> list[str]:
        """The files whose name ends with ``suffix``, sorted."""
        return sorted(name for name in self.files if name.endswith(suffix))

    def remove(self, name: str) -> None:
        """Delete the file if it exists."""
        self.files.pop(name, None)


def _segment_name(sequence: int) -> str:
    return f"{sequence:016x}{LOG_SUFFIX}"


class LocalLog:
    """Append-only segments of checksummed records on a :class:`Disk`, with group commit."""

    def __init__(self, disk: Disk, sequence: int) -> None:
        """Append to the segment ``sequence`` (use :meth:`open`)."""
        self._disk = disk
        self._sequence = sequence
        self._buffer = bytearray()
        self._buffered_records = 0
        self.syncs = 0
        """How many syncs wrote something (one per pump that changed the store, at most)."""
        self.bytes = 0
        """Bytes written to the log since it last started afresh (what a restart replays)."""

    @classmethod
    def open(cls, disk: Disk) -> tuple[LocalLog, list[bytes]]:
        """Read every segment in order and return the log (appending to a new segment) with
        the records to replay.

        A torn or corrupt tail of the last segment (a crash during its last append) is cut off
        durably; a bad record in an earlier segment is damage beyond repair:
        :class:`StorageError`.
        """
        names = disk.names(LOG_SUFFIX)
        records: list[bytes] = []
        sequence = total = 0
        for position, name in enumerate(names):
            try:
                sequence = max(sequence, int(name[: -len(LOG_SUFFIX)], 16) + 1)
            except ValueError:
                raise StorageError(f"{name}: not a local log segment name") from None
            data = disk.read(name) or b""
            frames, good_bytes = decode_records(data)
            records.extend(frames)
            total += good_bytes
            if good_bytes < len(data):
                if position != len(names) - 1:
                    raise StorageError(f"{name}: bad record at byte {good_bytes} before the end")
                disk.write_atomically(name, data[:good_bytes])
        log = cls(disk, sequence)
        log.bytes = total
        return log, records

    def append(self, frame: bytes) -> None:
        """Buffer one record; durable at the next :meth:`sync`."""
        self._buffer += encode_record(frame)
        self._buffered_records += 1

    @property
    def unsynced_records(self) -> int:
        """Records a crash now would lose."""
        return self._buffered_records

    def sync(self) -> None:
        """Write the buffered records to the current segment and fsync it (one fsync)."""
        if not self._buffer:
            return
        try:
            self._disk.append_durably(_segment_name(self._sequence), bytes(self._buffer))
        except OSError as error:
            raise StorageError(f"local write-ahead log sync failed: {error}") from error
        self.bytes += len(self._buffer)
        self._buffer.clear()
        self._buffered_records = 0
        self.syncs += 1

    def restart(self) -> None:
        """Drop every record, buffered or written: a durable snapshot now holds them all.

        Call only after the snapshot is durable. Later records go to a new segment; the old
        ones are deleted oldest first, so a crash part way leaves a suffix that replays
        harmlessly over the snapshot.
        """
        self._buffer.clear()
        self._buffered_records = 0
        self.bytes = 0
        old = self._disk.names(LOG_SUFFIX)
        self._sequence += 1
        try:
            for name in old:
                self._disk.remove(name)
        except OSError as error:
            raise StorageError(f"local write-ahead log truncation failed: {error}") from error
