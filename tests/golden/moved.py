"""The storage modules the golden and fuzz tests use, imported in this one place."""

from __future__ import annotations

from crdtstream.storage import snapshot as store_snapshot
from crdtstream.storage import wal, wal_format
from tests.crashable import CrashableStorage

__all__ = ["CrashableStorage", "store_snapshot", "wal", "wal_format"]
