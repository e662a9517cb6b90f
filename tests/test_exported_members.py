"""The public API is exactly what ``crdtstream.__all__`` says, and every name exists."""

from __future__ import annotations

import subprocess
import sys

import pytest

import crdtstream

EXPECTED = {
    "ConfigError",
    "CrdtStreamError",
    "DecodeError",
    "Distribution",
    "GCounter",
    "GSet",
    "HyperLogLog",
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
    "TransportClosedError",
    "TransportError",
    "UnavailableError",
    "Hopping",
    "IngestResult",
    "StoreDelta",
    "Tumbling",
    "WindowConfig",
    "WindowStore",
    "WindowValue",
    "__version__",
    "open",
    "open_sync",
    "testing",
}


def test_all_is_pinned() -> None:
    assert set(crdtstream.__all__) == EXPECTED


def test_the_root_loads_no_driver_engine_or_event_loop() -> None:
    """``import crdtstream`` for a counter must not drag in the node, the engine, Raft's log,
    pycrdt or asyncio (a fresh interpreter, since this one has imported them already)."""
    probe = (
        "import sys, crdtstream; "
        "heavy = ('crdtstream.node', 'crdtstream.engine', 'crdtstream.storage', "
        "'crdtstream.raft', 'crdtstream.gossip', 'crdtstream.replica', "
        "'crdtstream.sync_replica', 'crdtstream.testing', "
        "'crdtstream.watch', 'transports', 'zmq', 'aiohttp', 'pycrdt', 'asyncio', 'threading'); "
        "print(sorted(m for m in sys.modules "
        "if any(m == h or m.startswith(h + '.') for h in heavy)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == "[]", loaded.stdout


def test_every_exported_name_exists() -> None:
    missing = [name for name in crdtstream.__all__ if not hasattr(crdtstream, name)]
    assert missing == []


def test_the_replica_entry_points_load_on_first_use() -> None:
    """``crdtstream.open`` / ``open_sync`` / ``testing`` exist, and only touching them loads the
    driver (a fresh interpreter)."""
    probe = (
        "import sys, crdtstream; "
        "before = 'crdtstream.replica' in sys.modules; "
        "opener = crdtstream.open; "
        "print(before, 'crdtstream.replica' in sys.modules, 'transports.zeromq' in sys.modules, "
        "callable(opener), callable(crdtstream.open_sync), "
        "callable(crdtstream.testing.cluster))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    # The ZeroMQ transport is imported when a replica opens, not when ``open`` is looked up.
    assert loaded.stdout.split() == ["False", "True", "False", "True", "True", "True"]


def test_an_unknown_attribute_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        crdtstream.no_such_name  # noqa: B018
