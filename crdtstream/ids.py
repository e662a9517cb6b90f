"""Identifiers: node ids (stable names chosen by operators) and replica ids (one per incarnation).

A node writes only its own replica slot of every CRDT. A node restarted with its data directory
keeps its replica id; a node whose disk is gone gets a new one, so contributions gossiped under
the old id are neither lost nor counted twice.
"""

from __future__ import annotations

import random
import re

__all__ = ["is_valid_node_id", "new_replica_id", "validate_node_id"]

_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def is_valid_node_id(node_id: str) -> bool:
    """True when ``node_id`` is 1-64 characters of letters, digits, ``.``, ``_`` or ``-``."""
    return bool(_NODE_ID.match(node_id))


def validate_node_id(node_id: str) -> str:
    """Return ``node_id`` unchanged, or raise :class:`ValueError` naming the rule it breaks."""
    if not is_valid_node_id(node_id):
        raise ValueError(
            f"node id {node_id!r} must be 1-64 characters of letters, digits, '.', '_' or '-'"
        )
    return node_id


def new_replica_id(node_id: str, rng: random.Random) -> str:
    """A fresh replica id for a new incarnation of ``node_id``: ``<node_id>~<8 hex digits>``.

    The randomness is injected so simulations stay reproducible; the driver passes an RNG seeded
    from the operating system.
    """
    validate_node_id(node_id)
    return f"{node_id}~{rng.getrandbits(32):08x}"
