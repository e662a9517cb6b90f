"""Store snapshots: the whole store as one wire frame, and a crash-safe file write.

The encoding is pure; :func:`write_snapshot` is the one file-touching helper, meant to be called
by the driver: it writes a temporary file, fsyncs it, renames it over the target atomically and
fsyncs the directory, so a crash leaves either the old or the new snapshot, never a torn one.
Restored cells are stamped with the saved version, so ``delta_since(v)`` for any older ``v``
still returns them: a peer never misses state because of a restart.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from crdtstream import wire
from crdtstream.config import WindowConfig
from crdtstream.errors import DecodeError, StorageError
from crdtstream.storage.files import write_atomically
from crdtstream.window.cells import KINDS
from crdtstream.window.delta import StoreDelta
from crdtstream.window.store import WindowStore

__all__ = ["read_snapshot", "restore", "snapshot", "write_snapshot"]


def snapshot(store: WindowStore) -> bytes:
    """The store as one frame (tag ``WINDOW_SNAPSHOT``)."""
    config = store.config
    body = {
        "replica": store.replica,
        "config": [
            config.size_ms,
            config.slide_ms,
            config.allowed_lateness_ms,
            config.retention_windows,
            config.distinct_precision,
            config.distribution_relative_accuracy,
        ],
        "version": store.version,
        "time_ms": store.watermark.time_ms,
        "keys": {kind: names for kind, names in store.kind_keys.items() if names},
        "late_by_key": store.late_by_key,
        "totals": [store.late_total, store.rejected_total, store.invalid_total],
        "state": store.full_state().to_wire(),
    }
    return wire.encode(wire.Tag.WINDOW_SNAPSHOT, body)


def restore(data: bytes) -> WindowStore:
    """Rebuild a store from :func:`snapshot`; malformed bytes raise :class:`DecodeError`."""
    return wire.decode_as(data, wire.Tag.WINDOW_SNAPSHOT, _build)


def _build(body: Any) -> WindowStore:
    size_ms, slide_ms, lateness_ms, retention, precision, accuracy = body["config"]
    config = WindowConfig(size_ms, slide_ms, lateness_ms, retention, precision, accuracy)
    replica = body["replica"]
    if not isinstance(replica, str):
        raise TypeError("the snapshot's replica id must be a string")
    store = WindowStore(replica, config)
    for kind, names in dict(body["keys"]).items():
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        store.intern_keys(kind, names)
    time_ms = body["time_ms"]
    if time_ms is not None:
        store.watermark.advance(int(time_ms))
    version = int(body["version"])
    store.version = max(version - 1, 0)
    store.merge(StoreDelta.from_wire(body["state"]))
    store.version = version
    store.late_by_key = {str(k): int(v) for k, v in dict(body["late_by_key"]).items()}
    store.late_total, store.rejected_total, store.invalid_total = (int(x) for x in body["totals"])
    return store


def write_snapshot(store: WindowStore, path: str | os.PathLike[str]) -> None:
    """Write :func:`snapshot` to ``path`` atomically (temp file, fsync, rename, fsync dir)."""
    write_atomically(path, snapshot(store))


def read_snapshot(path: str | os.PathLike[str]) -> WindowStore:
    """Load a snapshot file; a corrupt one raises :class:`StorageError`."""
    data = Path(path).read_bytes()
    try:
        return restore(data)
    except DecodeError as error:
        raise StorageError(f"snapshot {path} is unusable: {error}") from error
