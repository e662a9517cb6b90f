"""crdtstream: windowed stream aggregation as mergeable CRDT state, gossiped between edge nodes.

The package root exports the library types only: the CRDTs, the windowed store and its values,
and the error tree, so ``import crdtstream`` for a counter stays light. A node and its engine are
imported from their packages (``from crdtstream.node import Node``, ``from crdtstream.engine
import Engine``), as are the transport protocol (``crdtstream.transport``) and its
implementations. ``tests/test_exported_members.py`` pins this surface.
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
    InvalidValueError,
    KindConflictError,
    MergeError,
    NotLeaderError,
    PayloadTooLargeError,
    PeerUnknownError,
    RefusedError,
    StorageError,
    TransportClosedError,
    TransportError,
    UnavailableError,
)
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
    "InvalidValueError",
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
    "RefusedError",
    "StorageError",
    "StoreDelta",
    "TransportClosedError",
    "TransportError",
    "Tumbling",
    "UnavailableError",
    "WindowConfig",
    "WindowStore",
    "WindowValue",
    "__version__",
]
