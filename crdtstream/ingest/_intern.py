"""Collision-safe interning of byte segments (metric names and tag lists) without a Python loop.

Every segment is cut into 8-byte words (read through an overlapping view of the buffer, so a
word can start at any byte); the words are mixed with their position and summed per segment into
a 64-bit hash, a few numpy passes over about one word per 8 bytes of key. Equal hashes are only a
hint: each row's words are then compared with those of the representative of its hash, and rows
that differ (a collision) are reported so the caller can parse them the slow, exact way.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = ["Interned", "SegmentInterner", "byte_words", "group_hashes", "group_rows"]

Int64Array = npt.NDArray[np.int64]
UInt64Array = npt.NDArray[np.uint64]

_MIX_1: Final = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2: Final = np.uint64(0x94D049BB133111EB)
_GOLDEN: Final = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: UInt64Array) -> UInt64Array:
    z = (z ^ (z >> np.uint64(30))) * _MIX_1
    z = (z ^ (z >> np.uint64(27))) * _MIX_2
    return z ^ (z >> np.uint64(31))


class SegmentInterner:
    """Interns ``[start, end)`` segments of one buffer by their exact bytes."""

    def __init__(self, data: bytes) -> None:
        self.words = byte_words(data)

    def intern(self, starts: Int64Array, ends: Int64Array) -> Interned:
        """Group the segments by their bytes; see :class:`Interned`."""
        if starts.shape[0] == 0:
            empty = np.zeros(0, dtype=np.int64)
            return Interned(empty, empty, np.zeros(0, dtype=np.bool_))
        lengths = ends - starts
        chunks = _Chunks(self.words, starts, lengths)
        inverse, representatives = group_hashes(chunks.hash(lengths))
        peer = representatives[inverse]
        same = (lengths == lengths[peer]) & chunks.equal_to(peer)
        return Interned(representatives, inverse, ~same)


def group_rows(values: UInt64Array | Int64Array) -> tuple[Int64Array, Int64Array]:
    """``(inverse, representatives)``: rows with equal values share ``inverse[row]``, and
    ``representatives[group]`` is one row of that group (which one is unspecified)."""
    # Without return_index numpy may use its fast unstable sort; a scatter then picks a row.
    distinct, inverse = np.unique(values, return_inverse=True)
    inverse = inverse.astype(np.int64).reshape(-1)
    representatives = np.empty(distinct.shape[0], dtype=np.int64)
    representatives[inverse] = np.arange(inverse.shape[0], dtype=np.int64)
    return inverse, representatives


def group_hashes(hashes: UInt64Array) -> tuple[Int64Array, Int64Array]:
    """:func:`group_rows` for well-mixed 64-bit hashes, without sorting: every row is scattered
    into a table slot chosen by its top bits, and a row whose slot holds its own hash joins the
    row that won the slot. The few rows that lost their slot to another hash are grouped by
    sorting (no row with their hash won a slot, since equal hashes share one)."""
    count = hashes.shape[0]
    if count == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    # About four slots per row keeps clashes rare; the top bits are the best mixed.
    bits = min(max(int(4 * count).bit_length(), 10), 30)
    slot = (hashes >> np.uint64(64 - bits)).astype(np.int64)
    table = np.empty(1 << bits, dtype=np.int64)
    table[slot] = np.arange(count, dtype=np.int64)
    winner = table[slot]
    clashed = np.flatnonzero(hashes[winner] != hashes)
    is_winner = np.zeros(count, dtype=np.bool_)
    is_winner[winner] = True
    is_winner[clashed] = False
    if clashed.shape[0]:
        clashed_inverse, clashed_rows = group_rows(hashes[clashed])
        is_winner[clashed[clashed_rows]] = True
        winner[clashed] = clashed[clashed_rows][clashed_inverse]
    group = np.cumsum(is_winner, dtype=np.int64) - 1
    return group[winner], np.flatnonzero(is_winner).astype(np.int64)


class _Chunks:
    """The segments cut into 8-byte words, all rows end to end; the bytes of a segment's last
    word that lie past its end are zeroed."""

    def __init__(self, words: UInt64Array, starts: Int64Array, lengths: Int64Array) -> None:
        counts = (lengths + 7) >> 3
        self.ends = np.cumsum(counts)
        self.firsts = self.ends - counts
        self.position = np.arange(int(self.ends[-1]), dtype=np.int64)
        self.position -= np.repeat(self.firsts, counts)
        self.values = words[np.repeat(starts, counts) + (self.position << 3)]
        # Only the last word of a row can run past its end; mask it, row by row.
        partial = np.flatnonzero(lengths & 7)
        kept_bits = ((lengths[partial] & 7) << 3).astype(np.uint64)
        self.values[self.ends[partial] - 1] &= (np.uint64(1) << kept_bits) - np.uint64(1)

    def hash(self, lengths: Int64Array) -> UInt64Array:
        """A 64-bit hash of each row's bytes: words scrambled, weighted by an odd constant of
        their position, summed per row, and the sum mixed with the length."""
        scrambled = self.values ^ (self.values >> np.uint64(29))
        position = self.position
        if position.shape[0] and int(position.max()) >= _POSITION_WEIGHTS.shape[0]:
            position = np.minimum(position, _POSITION_WEIGHTS.shape[0] - 1)
        scrambled *= _POSITION_WEIGHTS[position]
        prefix = np.zeros(scrambled.shape[0] + 1, dtype=np.uint64)
        np.cumsum(scrambled, out=prefix[1:])
        summed = prefix[self.ends] - prefix[self.firsts]
        return _mix(summed ^ (lengths.astype(np.uint64) * _MIX_1))

    def equal_to(self, peer: Int64Array) -> npt.NDArray[np.bool_]:
        """Whether each row's words equal those of row ``peer[row]`` (same lengths assumed;
        rows of other lengths may compare wrongly and must be excluded by the caller)."""
        equal = np.ones(peer.shape[0], dtype=np.bool_)
        total = self.values.shape[0]
        if total == 0:
            return equal
        counts = self.ends - self.firsts
        peer_index = self.position + np.repeat(self.firsts[peer], counts)
        np.minimum(peer_index, total - 1, out=peer_index)
        differing = np.flatnonzero(self.values != self.values[peer_index])
        equal[np.searchsorted(self.ends, differing, side="right")] = False
        return equal


def _position_weights(count: int) -> UInt64Array:
    """Distinct odd multipliers, one per word position (the last reused beyond ``count``)."""
    weights = _mix(np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN)
    weights |= np.uint64(1)
    return weights


_POSITION_WEIGHTS: Final = _position_weights(1024)


class Interned(NamedTuple):
    """``representatives``: one row per distinct segment; ``inverse[i]``: which one row i is;
    ``collided[i]``: row i hashed like a different segment and must be handled apart."""

    representatives: Int64Array
    inverse: Int64Array
    collided: npt.NDArray[np.bool_]


def byte_words(data: bytes) -> npt.NDArray[np.uint64]:
    """``words[i]`` = the 8 bytes of ``data`` from offset ``i`` as a little-endian integer
    (zero-padded past the end): an overlapping, zero-copy view of a padded copy."""
    padded = np.frombuffer(data + bytes(8), dtype=np.uint8)
    return np.ndarray((len(data),), dtype="<u8", buffer=padded, strides=(1,))
