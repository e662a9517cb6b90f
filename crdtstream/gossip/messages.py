"""Gossip frames: one envelope for every anti-entropy, membership and catalog message.

A frame is ``wire.encode(tag, [updates, progress, body])``: ``tag`` says which core the body
is for (``Tag.GOSSIP_*``, ``Tag.SWIM_*``, ``Tag.CATALOG_SYNC``; ``Tag.GOSSIP_PROGRESS``
has an empty body and exists for its piggyback); ``updates`` are piggybacked
membership changes and ``progress`` piggybacked finality records, so that dissemination rides on
traffic that flows anyway (SWIM §4 "infection-style dissemination"). The cores produce
:class:`Message` values (a peer, a tag and a plain body); :mod:`crdtstream.gossip.core` adds the
piggyback and turns them into bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crdtstream import wire
from crdtstream.errors import DecodeError

__all__ = [
    "NO_WATERMARK_MS",
    "STATUS_CODES",
    "Frame",
    "MemberUpdate",
    "Message",
    "Outgoing",
    "Progress",
    "decode_frame",
    "encode_frame",
]

NO_WATERMARK_MS = -(1 << 62)
"""The watermark of a replica that has seen no time yet (closes no window)."""

STATUS_CODES = ("alive", "suspect", "dead", "left", "removed")
"""Member states; their index is the wire code. ``removed`` is an operator's verdict that a
replica is gone for good (see ``Membership.remove``)."""

GOSSIP_TAGS = frozenset(
    {
        wire.Tag.GOSSIP_DELTA,
        wire.Tag.GOSSIP_ACK,
        wire.Tag.SWIM_PING,
        wire.Tag.SWIM_PING_REQ,
        wire.Tag.SWIM_ACK,
        wire.Tag.SWIM_NACK,
        wire.Tag.SWIM_SYNC,
        wire.Tag.SWIM_SYNC_REPLY,
        wire.Tag.CATALOG_SYNC,
        wire.Tag.GOSSIP_PROGRESS,
    }
)


@dataclass(frozen=True, slots=True)
class Message:
    """A message a core wants sent: to whom, of which kind, and its plain body."""

    peer_id: str
    tag: int
    body: Any


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An encoded frame for the driver to hand to the transport."""

    peer_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class MemberUpdate:
    """What one node says about a member: alive, suspect, dead, left or removed, at an
    incarnation.

    ``origin`` is the node that made the claim (it counts as an independent confirmation of a
    suspicion, Lifeguard §4.2); ``replica`` is the member's current replica id.
    """

    node_id: str
    address: str
    incarnation: int
    status: str
    replica: str
    origin: str

    def to_wire(self) -> list[Any]:
        """The plain list that travels."""
        code = STATUS_CODES.index(self.status)
        return [self.node_id, self.address, self.incarnation, code, self.replica, self.origin]

    @classmethod
    def from_wire(cls, raw: Any) -> MemberUpdate:
        """Rebuild from :meth:`to_wire` output; raises on a wrong shape."""
        node_id, address, incarnation, code, replica, origin = raw
        if not all(isinstance(text, str) for text in (node_id, address, replica, origin)):
            raise TypeError("member update ids must be strings")
        if not (isinstance(incarnation, int) and incarnation >= 0):
            raise ValueError(f"incarnation must be a non-negative int, got {incarnation!r}")
        return cls(node_id, address, incarnation, STATUS_CODES[code], replica, origin)


@dataclass(frozen=True, slots=True)
class Progress:
    """A replica's watermark, its own writes per window, and what finality needs of the rest.

    ``held`` maps a window start to the writes of *other* replicas this replica's node has
    merged there; ``sealed`` names the replicas it knows retired (their process gone for good),
    so its ``held`` counts of them were taken after they could no longer grow at their source
    (see :mod:`crdtstream.gossip.finality`). Records of one replica form a lattice (watermark
    and every count by max, ``sealed`` by union), so they can be gossiped transitively,
    duplicated and reordered freely.
    """

    replica: str
    watermark_ms: int
    window_writes: dict[int, int] = field(default_factory=dict)
    held: dict[int, dict[str, int]] = field(default_factory=dict)
    sealed: frozenset[str] = frozenset()

    def join(self, other: Progress) -> Progress:
        """Pointwise max with another record of the same replica."""
        writes = dict(self.window_writes)
        for start, count in other.window_writes.items():
            writes[start] = max(writes.get(start, 0), count)
        held = {start: dict(counts) for start, counts in self.held.items()}
        for start, counts in other.held.items():
            joined = held.setdefault(start, {})
            for replica, count in counts.items():
                joined[replica] = max(joined.get(replica, 0), count)
        return Progress(
            self.replica,
            max(self.watermark_ms, other.watermark_ms),
            writes,
            held,
            self.sealed | other.sealed,
        )

    def to_wire(self) -> list[Any]:
        """The plain list that travels (three fields when nothing is held or sealed)."""
        body: list[Any] = [
            self.replica,
            self.watermark_ms,
            [[s, c] for s, c in self.window_writes.items()],
        ]
        if self.held or self.sealed:
            held = [[s, [[r, c] for r, c in counts.items()]] for s, counts in self.held.items()]
            body += [held, sorted(self.sealed)]
        return body

    @classmethod
    def from_wire(cls, raw: Any) -> Progress:
        """Rebuild from :meth:`to_wire` output; raises on a wrong shape."""
        replica, watermark_ms, writes, *rest = raw
        if not isinstance(replica, str):
            raise TypeError("progress replica must be a string")
        held: dict[int, dict[str, int]] = {}
        sealed: frozenset[str] = frozenset()
        if rest:
            held_raw, sealed_raw = rest
            for start, counts in held_raw:
                held[int(start)] = {_text(r): int(c) for r, c in counts}
            sealed = frozenset(_text(r) for r in sealed_raw)
        return cls(replica, int(watermark_ms), {int(s): int(c) for s, c in writes}, held, sealed)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("replica ids must be strings")
    return value


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded gossip frame."""

    tag: int
    body: Any
    updates: list[MemberUpdate]
    progress: list[Progress]


def encode_frame(
    tag: int, body: Any, updates: list[MemberUpdate], progress: list[Progress]
) -> bytes:
    """One frame carrying ``body`` for the core named by ``tag``, plus piggyback."""
    return wire.encode(tag, [[u.to_wire() for u in updates], [p.to_wire() for p in progress], body])


def _build_frame(tag: int, raw: Any) -> Frame:
    updates_raw, progress_raw, body = raw
    updates = [MemberUpdate.from_wire(item) for item in updates_raw]
    progress = [Progress.from_wire(item) for item in progress_raw]
    return Frame(tag, body, updates, progress)


def decode_frame(payload: bytes, max_bytes: int = wire.MAX_MESSAGE_BYTES) -> Frame:
    """Decode a gossip frame; raise :class:`DecodeError` for anything else or malformed."""
    tag, raw = wire.decode(payload, max_bytes=max_bytes)
    if tag not in GOSSIP_TAGS:
        raise DecodeError(f"tag {tag} is not a gossip message")
    return wire.build_checked(raw, lambda value: _build_frame(tag, value))
