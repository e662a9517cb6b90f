"""crdtstream: windowed stream aggregation as mergeable CRDT state, gossiped between edge nodes.

The public library surface is re-exported here; ``tests/test_exported_members.py`` pins it.
"""

from __future__ import annotations

from crdtstream.crdt import (
    Distribution,
    GCounter,
    GSet,
    HyperLogLog,
    LWWRegister,
    MaxRegister,
    MinRegister,
    ORSet,
    PNCounter,
)
from crdtstream.errors import (
    ConfigError,
    CrdtStreamError,
    DecodeError,
    KindConflictError,
    MergeError,
    NotLeaderError,
    PayloadTooLargeError,
    PeerUnknownError,
    StorageError,
    TransportClosedError,
    TransportError,
    UnavailableError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "CrdtStreamError",
    "DecodeError",
    "Distribution",
    "GCounter",
    "GSet",
    "HyperLogLog",
    "KindConflictError",
    "LWWRegister",
    "MaxRegister",
    "MergeError",
    "MinRegister",
    "NotLeaderError",
    "ORSet",
    "PNCounter",
    "PayloadTooLargeError",
    "PeerUnknownError",
    "StorageError",
    "TransportClosedError",
    "TransportError",
    "UnavailableError",
    "__version__",
]
