"""Crash-safe file writes, shared by every module that keeps state on disk.

A crash during :func:`write_atomically` leaves either the old file or the new one, never a torn
mix: the data goes to a temporary file that is fsynced, renamed over the target, and then the
directory is fsynced so the rename itself survives a power cut. ``sync_file`` is injectable so
tests can count or fail fsyncs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["SyncFile", "sync_directory", "write_atomically"]

SyncFile = Callable[[int], None]


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(descriptor, view)
        view = view[written:]


def sync_directory(directory: str | os.PathLike[str], sync_file: SyncFile = os.fsync) -> None:
    """Make the directory's entries (created, renamed, deleted files) durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        sync_file(descriptor)
    finally:
        os.close(descriptor)


def write_atomically(
    path: str | os.PathLike[str], data: bytes, sync_file: SyncFile = os.fsync
) -> None:
    """Replace ``path`` with ``data``: all of it or nothing, durable when this returns."""
    target = Path(path)
    temporary = target.with_name(target.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(descriptor, data)
        sync_file(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temporary, target)
    sync_directory(target.parent, sync_file)
