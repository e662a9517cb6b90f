"""Which peers a node exchanges deltas with: a Chord-like overlay over the live members.

δ-interval anti-entropy delivers every buffered delta-group to every *neighbour* that has not
acknowledged it. With every member a neighbour, each update would cross the network about N²
times; Enes et al. evaluate it on a partial mesh for that reason. Here a node's neighbours are
its fingers on a hash ring of the live members: for every power of two ``2^k``, the member that
follows ``position + 2^k`` and the one that precedes ``position - 2^k`` (positions are the
64-bit hashes of node ids). That gives about ``2·log2 N`` neighbours, includes both ring
neighbours (so the graph stays connected whatever the size), has a diameter of about
``log2 N``, and changes for only a few nodes when one member joins or dies — a new neighbour
costs a full-state transfer, so stability matters.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence

from crdtstream.crdt.hashing import hash64

__all__ = ["finger_neighbours"]

_RING_BITS = 64
_RING_SIZE = 1 << _RING_BITS


@functools.lru_cache(maxsize=65_536)
def _position(node_id: str) -> int:
    return hash64(node_id)


def finger_neighbours(node_id: str, peers: Sequence[str]) -> list[str]:
    """The overlay neighbours of ``node_id`` among ``peers`` (which exclude it), sorted."""
    if len(peers) <= 2:
        return sorted(peers)
    ring = sorted((_position(peer), peer) for peer in peers)
    positions = [position for position, _ in ring]
    own = _position(node_id)
    chosen: set[str] = set()
    for bit in range(_RING_BITS):
        forward = (own + (1 << bit)) % _RING_SIZE
        backward = (own - (1 << bit)) % _RING_SIZE
        chosen.add(ring[bisect.bisect_left(positions, forward) % len(ring)][1])
        chosen.add(ring[bisect.bisect_right(positions, backward) - 1][1])
    return sorted(chosen)
