"""crdtstream: windowed stream aggregation as mergeable CRDT state, gossiped between edge nodes.

The package root exports the library types only: the CRDTs, the windowed store and its values,
and the error tree, so ``import crdtstream`` for a counter stays light. A node and its engine are
imported from their packages (``from crdtstream.node import Node``, ``from crdtstream.engine
import Engine``), as are the transport protocol (``crdtstream.transport``) and its
implementations. ``tests/test_exported_members.py`` pins this surface.

Three names are loaded on first use, so that a counter's import stays light: ``open`` and
``open_sync`` (an embedded replica: :mod:`crdtstream.replica`, :mod:`crdtstream.sync_replica`)
and ``testing`` (in-memory clusters, :mod:`crdtstream.testing`); the node, the engine, the
transports and asyncio are imported only then.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from crdtstream import testing
    from crdtstream.replica import open
    from crdtstream.sync_replica import open_sync

__version__ = "0.1.0"

_LAZY = {"open": "crdtstream.replica", "open_sync": "crdtstream.sync_replica"}


def __getattr__(name: str) -> Any:
    """Load ``open``, ``open_sync`` and ``testing`` on first use (see the module docstring)."""
    if name == "testing":
        return importlib.import_module("crdtstream.testing")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'crdtstream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
    "open",
    "open_sync",
    "testing",
]
