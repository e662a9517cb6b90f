"""The on-disk format of the write-ahead log, and the replay that reads a directory back.

A record is a big-endian length and :func:`zlib.crc32` of its body, then the body: a wire frame
holding an entry, a hard state or a snapshot mark (see :mod:`crdtstream.storage.wal` for how the
log uses them). Replay reads every segment, cuts a torn or corrupt tail of the last one, finds
the newest snapshot that a durable mark names, and rebuilds a :class:`MemoryStorage` from it.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crdtstream import wire
from crdtstream.errors import DecodeError, StorageError
from crdtstream.raft import types
from crdtstream.raft.storage import MemoryStorage
from crdtstream.raft.types import Entry, HardState, Snapshot
from crdtstream.storage import files
from crdtstream.storage.files import sync_directory, write_atomically

__all__ = [
    "HEADER",
    "METADATA_FILE",
    "RECORD_BYTES_MAX",
    "Files",
    "Mark",
    "Replay",
    "Segment",
    "SyncFile",
    "decode_records",
    "encode_mark",
    "encode_record",
    "load_metadata",
    "read_segments",
    "rebuild",
    "segment_name",
    "snapshot_name",
]

RECORD_BYTES_MAX = 64 << 20
"""A length field above this is corruption, not a record."""

HEADER = struct.Struct(">II")
METADATA_FILE = "metadata"

SyncFile = files.SyncFile
"""Makes a file descriptor durable; :func:`os.fsync` in production, a counter in tests."""


# -- records ------------------------------------------------------------------------------------


def encode_record(frame: bytes) -> bytes:
    """One record: big-endian length and CRC32 of ``frame``, then ``frame``."""
    return HEADER.pack(len(frame), zlib.crc32(frame)) + frame


def decode_records(data: bytes) -> tuple[list[bytes], int]:
    """The valid records at the start of ``data`` and the offset of the first bad byte.

    The offset equals ``len(data)`` when every record is whole and its checksum matches.
    """
    frames: list[bytes] = []
    offset = 0
    while offset < len(data):
        if offset + HEADER.size > len(data):
            break
        length, checksum = HEADER.unpack_from(data, offset)
        start = offset + HEADER.size
        if length == 0 or length > RECORD_BYTES_MAX or start + length > len(data):
            break
        frame = data[start : start + length]
        if zlib.crc32(frame) != checksum:
            break
        frames.append(frame)
        offset = start + length
    return frames, offset


@dataclass(frozen=True, slots=True)
class Mark:
    """A snapshot named in the log; ``received`` marks also reset the log to the snapshot."""

    index: int
    term: int
    received: bool


def encode_mark(mark: Mark) -> bytes:
    """The record body of a snapshot mark."""
    return wire.encode(wire.Tag.RAFT_WAL_SNAPSHOT_MARK, [mark.index, mark.term, mark.received])


def _mark_from(body: Any) -> Mark:
    index, term, received = body
    if type(index) is not int or type(term) is not int or type(received) is not bool:
        raise TypeError(f"snapshot mark must be [int, int, bool], got {body!r}")
    return Mark(index, term, received)


def _voters_from(body: Any) -> tuple[str, ...]:
    if not (isinstance(body, list) and all(isinstance(voter, str) for voter in body)):
        raise TypeError(f"metadata must be a list of voter ids, got {body!r}")
    return tuple(body)


def _decode_frame(frame: bytes) -> Entry | HardState | Mark:
    """Turn one record body into what it holds; :class:`DecodeError` on anything else."""
    with contextlib.suppress(DecodeError):
        return types.decode_entry(frame)  # nearly every record is an entry: decode it once
    tag, body = wire.decode(frame)
    if tag == wire.Tag.RAFT_HARD_STATE:
        return types.decode_hard_state(frame)
    if tag == wire.Tag.RAFT_WAL_SNAPSHOT_MARK:
        return wire.build_checked(body, _mark_from)
    raise DecodeError(f"unexpected record tag {tag} in the write-ahead log")


# -- files --------------------------------------------------------------------------------------


def segment_name(sequence: int, first_index: int) -> str:
    """Segments sort by name in the order they were written."""
    return f"{sequence:016x}-{first_index:016x}.wal"


def snapshot_name(index: int, term: int) -> str:
    """Snapshots sort by name from oldest to newest."""
    return f"{index:016x}-{term:016x}.snap"


def _parse_hex_pair(name: str, suffix: str) -> tuple[int, int] | None:
    if not name.endswith(suffix):
        return None
    try:
        first, second = name[: -len(suffix)].split("-")
        return int(first, 16), int(second, 16)
    except ValueError:
        return None


class Files:
    """Directory operations with an injectable fsync, so tests can count and replace it."""

    def __init__(self, directory: Path, sync_file: SyncFile) -> None:
        self.directory = directory
        self.sync_file = sync_file

    def sync_directory(self) -> None:
        """Make the directory's entries (created, renamed files) durable."""
        sync_directory(self.directory, self.sync_file)

    def write_atomically(self, name: str, data: bytes) -> None:
        """Temporary file, fsync, rename, fsync the directory: all of ``data`` or nothing."""
        write_atomically(self.directory / name, data, self.sync_file)

    def listing(self, suffix: str) -> list[tuple[int, int, str]]:
        """Files named ``<hex>-<hex><suffix>``, sorted by their numbers."""
        found = []
        for path in self.directory.iterdir():
            numbers = _parse_hex_pair(path.name, suffix)
            if numbers is not None:
                found.append((*numbers, path.name))
        return sorted(found)

    def remove(self, name: str) -> None:
        """Delete a file if it is still there."""
        (self.directory / name).unlink(missing_ok=True)


@dataclass(slots=True)
class Segment:
    """One segment file and the highest entry index ever written to it."""

    name: str
    sequence: int
    last_entry_index: int = 0


@dataclass(slots=True)
class Replay:
    """What reading the directory found, before it becomes a :class:`MemoryStorage`."""

    segments: list[Segment]
    records: list[Entry | HardState | Mark]
    record_segments: list[int]


def load_metadata(files: Files, voters: Sequence[str]) -> tuple[str, ...]:
    """The voter set written when the log was created; ``voters`` on first open."""
    path = files.directory / METADATA_FILE
    if not path.exists():
        frame = wire.encode(wire.Tag.RAFT_WAL_METADATA, list(voters))
        files.write_atomically(METADATA_FILE, encode_record(frame))
        return tuple(voters)
    frames, _ = decode_records(path.read_bytes())
    if len(frames) != 1:
        raise StorageError(f"{path}: metadata record is damaged")
    try:
        return wire.decode_as(frames[0], wire.Tag.RAFT_WAL_METADATA, _voters_from)
    except DecodeError as error:
        raise StorageError(f"{path}: {error}") from error


def read_segments(files: Files) -> Replay:
    """Every good record of every segment; the last segment's bad tail is cut off on disk."""
    for leftover in files.directory.glob("*.tmp"):
        leftover.unlink()
    listing = files.listing(".wal")
    replay = Replay([], [], [])
    for position, (sequence, _, name) in enumerate(listing):
        path = files.directory / name
        data = path.read_bytes()
        frames, good_bytes = decode_records(data)
        segment = Segment(name, sequence)
        offset = 0
        for frame in frames:
            try:
                record = _decode_frame(frame)
            except DecodeError:
                good_bytes = offset
                break
            offset += HEADER.size + len(frame)
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


def _truncate(files: Files, path: Path, size: int) -> None:
    descriptor = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(descriptor, size)
        files.sync_file(descriptor)
    finally:
        os.close(descriptor)


def _newest_marked_snapshot(files: Files, replay: Replay) -> Snapshot | None:
    """The newest snapshot file that a durable mark names; unmarked newer files are removed."""
    marked = {(r.index, r.term) for r in replay.records if isinstance(r, Mark)}
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


def rebuild(files: Files, voters: tuple[str, ...], replay: Replay) -> MemoryStorage:
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


def _reset_to_snapshot(memory: MemoryStorage, mark: Mark) -> MemoryStorage:
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
