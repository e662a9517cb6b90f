"""The public API is exactly what ``crdtstream.__all__`` says, and every name exists."""

from __future__ import annotations

import crdtstream

EXPECTED = {
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
    "Hopping",
    "IngestResult",
    "Node",
    "NodeConfig",
    "Packet",
    "PeerAddress",
    "StoreDelta",
    "Transport",
    "TransportStats",
    "Tumbling",
    "WindowConfig",
    "WindowStore",
    "WindowValue",
    "__version__",
}


def test_all_is_pinned() -> None:
    assert set(crdtstream.__all__) == EXPECTED


def test_every_exported_name_exists() -> None:
    missing = [name for name in crdtstream.__all__ if not hasattr(crdtstream, name)]
    assert missing == []
