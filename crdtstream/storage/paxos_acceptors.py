"""An acceptor's records on disk: an append-only file of records, fsynced before any answer.

Each :meth:`AcceptorFile.save` appends one frame per record; :meth:`AcceptorFile.sync` fsyncs
the file (one fsync per Ready, whatever the number of keys it touched). On open the file is
replayed, the last record of a key winning; a torn or corrupt tail (a crash in the middle of
an append that was never synced, so never answered) is cut off. When the file grows past
``COMPACT_RATIO`` times its live records (and ``COMPACT_BYTES_MIN``), it is rewritten with one
record per key, atomically (:func:`~crdtstream.storage.files.write_atomically`).

Frame: ``length`` (4 bytes, big-endian) ``crc32`` (4 bytes) and a ``PAXOS_ACCEPTOR_RECORD``
wire frame of ``length`` bytes.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path

from crdtstream.errors import DecodeError
from crdtstream.paxos.types import AcceptorRecord, decode_record, encode_record
from crdtstream.storage.files import SyncFile, sync_directory, write_atomically

__all__ = ["ACCEPTORS_FILE", "AcceptorFile"]

ACCEPTORS_FILE = "acceptors.log"
COMPACT_RATIO = 4
COMPACT_BYTES_MIN = 1 << 20
_HEADER = struct.Struct(">II")


def _frame(key: str, record: AcceptorRecord) -> bytes:
    body = encode_record(key, record)
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


class AcceptorFile:
    """The durable records of one acceptor, in ``directory``."""

    def __init__(self, directory: Path, sync_file: SyncFile = os.fsync) -> None:
        """Open (creating it if needed) and replay the file in ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / ACCEPTORS_FILE
        self._sync_file = sync_file
        self.records: dict[str, AcceptorRecord] = {}
        self.sync_count = 0
        self.torn_bytes_cut = 0
        """Bytes of an unfinished last append found at open and cut off."""
        size = self._replay()
        self._descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._file_bytes = size
        self._dirty = False
        sync_directory(directory, sync_file)

    def _replay(self) -> int:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, checksum = _HEADER.unpack_from(data, offset)
            body = data[offset + _HEADER.size : offset + _HEADER.size + length]
            if len(body) < length or zlib.crc32(body) != checksum:
                break
            try:
                key, record = decode_record(body)
            except DecodeError:
                break
            self.records[key] = record
            offset += _HEADER.size + length
        if offset < len(data):
            self.torn_bytes_cut = len(data) - offset
            os.truncate(self.path, offset)
        return offset

    def load(self) -> list[tuple[str, AcceptorRecord]]:
        """Every record, as replayed and saved since."""
        return list(self.records.items())

    def save(self, records: Mapping[str, AcceptorRecord]) -> None:
        """Append the records; durable at the next :meth:`sync`."""
        if not records:
            return
        data = b"".join(_frame(key, record) for key, record in records.items())
        view = memoryview(data)
        while view:
            view = view[os.write(self._descriptor, view) :]
        self.records.update(records)
        self._file_bytes += len(data)
        self._dirty = True

    def sync(self) -> None:
        """fsync what was saved; compact the file when it has grown far past its records."""
        if not self._dirty:
            return
        self._sync_file(self._descriptor)
        self._dirty = False
        self.sync_count += 1
        if self._file_bytes >= COMPACT_BYTES_MIN:
            live = [_frame(key, record) for key, record in self.records.items()]
            live_bytes = sum(len(frame) for frame in live)
            if self._file_bytes > COMPACT_RATIO * live_bytes:
                self._rewrite(b"".join(live))

    def _rewrite(self, data: bytes) -> None:
        os.close(self._descriptor)
        write_atomically(self.path, data, self._sync_file)
        self._descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._file_bytes = len(data)

    def close(self) -> None:
        """Close the file (unsynced records may be lost, as in a crash)."""
        if self._descriptor >= 0:
            os.close(self._descriptor)
            self._descriptor = -1
