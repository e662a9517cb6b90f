"""The replica identity a node keeps in its data directory.

A node writes only its own replica slot of every CRDT. Resuming that slot after a restart is
safe only if no state newer than what the disk holds was ever sent under it: otherwise peers
hold a higher value of the slot than the restored one, and new local writes would be absorbed by
the max-merge of the slot (lost). So the identity file records whether the disk covers every
state sent under the replica (``resumable``):

- with the local write-ahead log (:mod:`crdtstream.storage.local_log`) it always does: the
  driver syncs the log before any frame leaves, so the flag is set while the node runs and a
  node resumes its slot after a crash too;
- without it (``durability = "none"``), only after a clean shutdown (a final snapshot written
  after the last send). After a crash the node keeps the restored state (every slot, its old
  one included) but writes under a new incarnation, so nothing gossiped before is lost and
  nothing is counted twice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crdtstream import wire
from crdtstream.errors import DecodeError, StorageError
from crdtstream.ids import new_replica_id

if TYPE_CHECKING:
    from crdtstream.storage.local_log import Disk

__all__ = ["Identity", "load_identity", "mark_clean", "mark_running"]

IDENTITY_FILE = "identity"


@dataclass(frozen=True, slots=True)
class Identity:
    """The replica id this incarnation writes under, and whether it was resumed."""

    node_id: str
    replica: str
    resumed: bool


def _build(body: Any) -> tuple[str, str, bool]:
    node_id, replica, resumable = body
    if not (isinstance(node_id, str) and isinstance(replica, str) and isinstance(resumable, bool)):
        raise TypeError("identity must be [node_id, replica, resumable]")
    return node_id, replica, resumable


def _save(disk: Disk, node_id: str, replica: str, resumable: bool) -> None:
    disk.write_atomically(
        IDENTITY_FILE, wire.encode(wire.Tag.NODE_IDENTITY, [node_id, replica, resumable])
    )


def load_identity(
    disk: Disk | None, node_id: str, rng: random.Random, *, logged: bool = False
) -> Identity:
    """The identity for a starting node. Without a disk, a new replica id. With one, the saved
    replica id when the disk covers everything sent under it, else a new one; then the flag is
    saved for this run: set when ``logged`` (every change is logged before it is sent),
    cleared until a clean shutdown otherwise."""
    identity = Identity(node_id, new_replica_id(node_id, rng), resumed=False)
    if disk is None:
        return identity
    data = disk.read(IDENTITY_FILE)
    if data is not None:
        try:
            saved_node, replica, resumable = wire.decode_as(data, wire.Tag.NODE_IDENTITY, _build)
        except DecodeError as error:
            raise StorageError(f"{IDENTITY_FILE}: unreadable identity: {error}") from error
        if saved_node != node_id:
            raise StorageError(f"{IDENTITY_FILE}: data directory belongs to node {saved_node!r}")
        if resumable:
            identity = Identity(node_id, replica, resumed=True)
    mark_running(disk, identity, logged=logged)
    return identity


def mark_running(disk: Disk, identity: Identity, *, logged: bool = False) -> None:
    """Record that the node runs under ``identity``: resumable after a crash only when
    ``logged``."""
    _save(disk, identity.node_id, identity.replica, resumable=logged)


def mark_clean(disk: Disk, identity: Identity) -> None:
    """Record a clean shutdown: the final snapshot holds everything ever sent."""
    _save(disk, identity.node_id, identity.replica, resumable=True)
