"""The replica identity a node keeps in its data directory.

A node writes only its own replica slot of every CRDT. Resuming that slot after a restart is
safe only if no state newer than the last snapshot was ever sent under it: otherwise peers hold
a higher value of the slot than the restored one, and new local writes would be absorbed by the
max-merge of the slot (lost). So the identity file records whether the last shutdown was clean
(a final snapshot written after the last send). After a clean shutdown the node resumes its
replica id; after a crash it keeps the restored state (every slot, its old one included) but
writes under a new incarnation, so nothing gossiped before is lost and nothing is counted twice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crdtstream import wire
from crdtstream.errors import DecodeError, StorageError
from crdtstream.ids import new_replica_id
from crdtstream.storage.files import write_atomically

__all__ = ["Identity", "load_identity", "mark_clean", "mark_running"]

IDENTITY_FILE = "identity"


@dataclass(frozen=True, slots=True)
class Identity:
    """The replica id this incarnation writes under, and whether it was resumed."""

    node_id: str
    replica: str
    resumed: bool


def _build(body: Any) -> tuple[str, str, bool]:
    node_id, replica, clean = body
    if not (isinstance(node_id, str) and isinstance(replica, str) and isinstance(clean, bool)):
        raise TypeError("identity must be [node_id, replica, clean]")
    return node_id, replica, clean


def _save(data_dir: Path, node_id: str, replica: str, clean: bool) -> None:
    body = [node_id, replica, clean]
    write_atomically(data_dir / IDENTITY_FILE, wire.encode(wire.Tag.NODE_IDENTITY, body))


def load_identity(data_dir: Path | None, node_id: str, rng: random.Random) -> Identity:
    """The identity for a starting node; marks it running (unclean) on disk before returning."""
    if data_dir is None:
        return Identity(node_id, new_replica_id(node_id, rng), resumed=False)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / IDENTITY_FILE
    identity = Identity(node_id, new_replica_id(node_id, rng), resumed=False)
    if path.exists():
        try:
            saved_node, replica, clean = wire.decode_as(
                path.read_bytes(), wire.Tag.NODE_IDENTITY, _build
            )
        except DecodeError as error:
            raise StorageError(f"{path}: unreadable identity: {error}") from error
        if saved_node != node_id:
            raise StorageError(f"{path}: data directory belongs to node {saved_node!r}")
        if clean:
            identity = Identity(node_id, replica, resumed=True)
    mark_running(data_dir, identity)
    return identity


def mark_running(data_dir: Path, identity: Identity) -> None:
    """Record that the node runs under ``identity`` and has not shut down cleanly yet."""
    _save(data_dir, identity.node_id, identity.replica, clean=False)


def mark_clean(data_dir: Path, identity: Identity) -> None:
    """Record a clean shutdown: the final snapshot holds everything ever sent."""
    _save(data_dir, identity.node_id, identity.replica, clean=True)
