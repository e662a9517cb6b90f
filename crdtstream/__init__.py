"""crdtstream: windowed stream aggregation as mergeable CRDT state, gossiped between edge nodes.

The public library surface is re-exported here; ``tests/test_exported_members.py`` pins it.
"""

from __future__ import annotations

from crdtstream.config import WindowConfig
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
from crdtstream.node import Node, NodeConfig, PeerAddress
from crdtstream.transport import Packet, Transport, TransportStats
from crdtstream.window import (
    Hopping,
    IngestResult,
    StoreDelta,
    Tumbling,
    WindowStore,
    WindowValue,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "CrdtStreamError",
    "DecodeError",
    "Distribution",
    "GCounter",
    "GSet",
    "Hopping",
    "HyperLogLog",
    "IngestResult",
    "KindConflictError",
    "LWWRegister",
    "MaxRegister",
    "MergeError",
    "MinRegister",
    "Node",
    "NodeConfig",
    "NotLeaderError",
    "ORSet",
    "PNCounter",
    "Packet",
    "PayloadTooLargeError",
    "PeerAddress",
    "PeerUnknownError",
    "StorageError",
    "StoreDelta",
    "Transport",
    "TransportClosedError",
    "TransportError",
    "TransportStats",
    "Tumbling",
    "UnavailableError",
    "WindowConfig",
    "WindowStore",
    "WindowValue",
    "__version__",
]
