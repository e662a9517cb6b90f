"""The storage modules the golden and fuzz tests use, imported in this one place.

They are expected to move out of the pure packages (into ``crdtstream.storage``); when they
do, only these imports change.
"""

from __future__ import annotations

from crdtstream.raft import wal, wal_format
from crdtstream.raft.crashable import CrashableStorage
from crdtstream.window import snapshot as store_snapshot

__all__ = ["CrashableStorage", "store_snapshot", "wal", "wal_format"]
