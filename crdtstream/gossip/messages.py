"""Gossip frames: one envelope for every anti-entropy, membership and catalog message.

A frame is ``wire.encode(tag, [updates, progress, body])``: ``tag`` says which core the body
is for (``Tag.GOSSIP_*``, ``Tag.SWIM_*``, ``Tag.CATALOG_SYNC``; ``Tag.GOSSIP_PROGRESS``
has an empty body and exists for its piggyback); ``updates`` are piggybacked
membership changes and ``progress`` piggybacked finality records, so that dissemination rides on
traffic that flows anyway (SWIM §4 "infection-style dissemination"). The cores produce
:class:`Message` values (a peer, a tag and a plain body); :mod:`crdtstream.gossip.core` adds the
piggyback and turns them into bytes.

Decoding decides, once, whether a frame is well formed: :func:`decode_frame` checks the
envelope, the piggyback and the body of every tag (types, ranges, lengths, known status codes)
and turns the body into one of the typed values below (:data:`Body`). It raises
:class:`~crdtstream.errors.DecodeError` and nothing else, so the cores' handlers run on values
they can trust and any exception they raise is a bug, not a peer's fault.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from crdtstream import wire
from crdtstream.errors import DecodeError

__all__ = [
    "ANY_EPOCH",
    "NO_WATERMARK_MS",
    "STATUS_CODES",
    "Body",
    "CatalogBody",
    "DeltaAck",
    "DeltaPart",
    "Frame",
    "MemberTable",
    "MemberUpdate",
    "Message",
    "Nack",
    "Outgoing",
    "Ping",
    "ProbeAck",
    "Progress",
    "decode_body",
    "decode_frame",
    "encode_frame",
]

NO_WATERMARK_MS = -(1 << 62)
"""The watermark of a replica that has seen no time yet (closes no window)."""

ANY_EPOCH = -1
"""A delta part's target epoch when it suits any run of the receiver (a full state)."""

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
        """Rebuild from :meth:`to_wire` output; raises :class:`DecodeError` on a wrong shape."""
        node_id, address, incarnation, code, replica, origin = _fields(raw, 6, "member update")
        if not all(type(text) is str for text in (node_id, address, replica, origin)):
            raise DecodeError("member update ids must be strings")
        _natural(incarnation, "member incarnation")
        if type(code) is not int or not 0 <= code < len(STATUS_CODES):
            raise DecodeError(f"unknown member status code {code!r}")
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
        """Rebuild from :meth:`to_wire` output; raises :class:`DecodeError` on a wrong shape."""
        fields = _list(raw, "progress record")
        if len(fields) not in (3, 5):
            raise DecodeError(f"progress record must have 3 or 5 fields, got {len(fields)}")
        replica, watermark_ms, writes = fields[:3]
        if type(replica) is not str:
            raise DecodeError("progress replica must be a string")
        if type(watermark_ms) is not int:
            raise DecodeError("progress watermark must be an integer")
        window_writes: dict[int, int] = {}
        for pair in _list(writes, "progress window writes"):
            start_ms, count = _fields(pair, 2, "progress window write")
            if type(start_ms) is not int:
                raise DecodeError("progress window start must be an integer")
            window_writes[start_ms] = _natural(count, "progress write count")
        held: dict[int, dict[str, int]] = {}
        sealed: frozenset[str] = frozenset()
        if len(fields) == 5:
            held_raw, sealed_raw = fields[3:]
            for pair in _list(held_raw, "progress holdings"):
                start_ms, counts = _fields(pair, 2, "progress window holdings")
                if type(start_ms) is not int:
                    raise DecodeError("progress holdings window start must be an integer")
                held[start_ms] = {
                    _text(replica_held, "held replica"): _natural(count, "held write count")
                    for replica_held, count in (
                        _fields(entry, 2, "held count") for entry in _list(counts, "held counts")
                    )
                }
            sealed = frozenset(_text(r, "sealed replica") for r in _list(sealed_raw, "sealed"))
        return cls(replica, watermark_ms, window_writes, held, sealed)


@dataclass(frozen=True, slots=True)
class DeltaPart:
    """``GOSSIP_DELTA``: part ``index`` of ``count`` of transfer ``transfer_id`` from a sender
    whose run is ``epoch``; ``data`` is the encoded delta (decoded by the lattice's decoder)."""

    epoch: int
    transfer_id: int
    index: int
    count: int
    data: bytes
    target_epoch: int = ANY_EPOCH
    """The receiver's run the part was built for (an interval on what that run acknowledged),
    or :data:`ANY_EPOCH` (a full state, good for any run)."""


@dataclass(frozen=True, slots=True)
class DeltaAck:
    """``GOSSIP_ACK``: the parts ``indexes`` of ``transfer_id`` were merged by the acker."""

    target_epoch: int
    acker_epoch: int
    transfer_id: int
    indexes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Ping:
    """``SWIM_PING`` (probe ``target``, which is the receiver) or ``SWIM_PING_REQ`` (probe
    ``target`` on the sender's behalf)."""

    sequence: int
    target: str


@dataclass(frozen=True, slots=True)
class ProbeAck:
    """``SWIM_ACK``: the probe ``sequence`` was answered (``node_id`` empty from a relay)."""

    sequence: int
    node_id: str


@dataclass(frozen=True, slots=True)
class Nack:
    """``SWIM_NACK``: a relay heard nothing back for the probe ``sequence``."""

    sequence: int


@dataclass(frozen=True, slots=True)
class MemberTable:
    """``SWIM_SYNC`` / ``SWIM_SYNC_REPLY``: the sender's member rows and its rules' digest."""

    rows: tuple[MemberUpdate, ...]
    rules_fingerprint: str


@dataclass(frozen=True, slots=True)
class CatalogBody:
    """``CATALOG_SYNC``: flags and a Yjs sync message (at least its two type bytes)."""

    flags: int
    message: bytes


@dataclass(frozen=True, slots=True)
class NoBody:
    """``GOSSIP_PROGRESS``: the frame exists for its piggyback."""


Body: TypeAlias = DeltaPart | DeltaAck | Ping | ProbeAck | Nack | MemberTable | CatalogBody | NoBody
"""A decoded, checked message body."""


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded gossip frame: its tag, checked body and piggyback."""

    tag: int
    body: Body
    updates: list[MemberUpdate]
    progress: list[Progress]


def encode_frame(
    tag: int, body: Any, updates: list[MemberUpdate], progress: list[Progress]
) -> bytes:
    """One frame carrying ``body`` for the core named by ``tag``, plus piggyback."""
    return wire.encode(tag, [[u.to_wire() for u in updates], [p.to_wire() for p in progress], body])


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise DecodeError(f"{what} must be an array, got {type(value).__name__}")
    return value


def _fields(value: Any, count: int, what: str) -> list[Any]:
    fields = _list(value, what)
    if len(fields) != count:
        raise DecodeError(f"{what} must have {count} fields, got {len(fields)}")
    return fields


def _natural(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise DecodeError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _text(value: Any, what: str) -> str:
    if type(value) is not str:
        raise DecodeError(f"{what} must be a string, got {type(value).__name__}")
    return value


def _delta_part(raw: Any) -> DeltaPart:
    fields = _list(raw, "delta part")
    if len(fields) not in (5, 6):
        raise DecodeError(f"delta part must have 5 or 6 fields, got {len(fields)}")
    epoch, transfer_id, index, count, data = fields[:5]
    target_epoch = fields[5] if len(fields) == 6 else ANY_EPOCH
    if type(target_epoch) is not int or target_epoch < ANY_EPOCH:
        raise DecodeError(f"delta target epoch must be an integer >= -1, got {target_epoch!r}")
    part = DeltaPart(
        _natural(epoch, "delta epoch"),
        _natural(transfer_id, "delta transfer id"),
        _natural(index, "delta part index"),
        _natural(count, "delta part count"),
        data,
        target_epoch,
    )
    if not part.index < part.count:
        raise DecodeError(f"delta part {part.index} of {part.count}")
    if not isinstance(data, bytes):
        raise DecodeError("delta data must be bytes")
    return part


def _delta_ack(raw: Any) -> DeltaAck:
    target_epoch, acker_epoch, transfer_id, indexes = _fields(raw, 4, "delta ack")
    return DeltaAck(
        _natural(target_epoch, "ack target epoch"),
        _natural(acker_epoch, "ack acker epoch"),
        _natural(transfer_id, "ack transfer id"),
        tuple(_natural(index, "acked part index") for index in _list(indexes, "acked parts")),
    )


def _ping(raw: Any) -> Ping:
    sequence, target = _fields(raw, 2, "ping")
    return Ping(_natural(sequence, "ping sequence"), _text(target, "ping target"))


def _probe_ack(raw: Any) -> ProbeAck:
    sequence, node_id = _fields(raw, 2, "probe ack")
    return ProbeAck(_natural(sequence, "ack sequence"), _text(node_id, "ack node id"))


def _nack(raw: Any) -> Nack:
    (sequence,) = _fields(raw, 1, "nack")
    return Nack(_natural(sequence, "nack sequence"))


def _member_table(raw: Any) -> MemberTable:
    rows, fingerprint = _fields(raw, 2, "member table")
    updates = tuple(MemberUpdate.from_wire(row) for row in _list(rows, "member rows"))
    return MemberTable(updates, _text(fingerprint, "rules fingerprint"))


def _catalog(raw: Any) -> CatalogBody:
    flags, message = _fields(raw, 2, "catalog sync")
    if not (isinstance(message, bytes) and len(message) >= 2):
        raise DecodeError("catalog sync message must be at least two bytes")
    return CatalogBody(_natural(flags, "catalog sync flags"), message)


def _no_body(raw: Any) -> NoBody:
    if _list(raw, "progress body"):
        raise DecodeError("a progress frame has an empty body")
    return NoBody()


_BODY_DECODERS: dict[int, Callable[[Any], Body]] = {
    wire.Tag.GOSSIP_DELTA: _delta_part,
    wire.Tag.GOSSIP_ACK: _delta_ack,
    wire.Tag.SWIM_PING: _ping,
    wire.Tag.SWIM_PING_REQ: _ping,
    wire.Tag.SWIM_ACK: _probe_ack,
    wire.Tag.SWIM_NACK: _nack,
    wire.Tag.SWIM_SYNC: _member_table,
    wire.Tag.SWIM_SYNC_REPLY: _member_table,
    wire.Tag.CATALOG_SYNC: _catalog,
    wire.Tag.GOSSIP_PROGRESS: _no_body,
}


def decode_body(tag: int, raw: Any) -> Body:
    """Check the plain body of a ``tag`` message and type it; raise :class:`DecodeError`."""
    decoder = _BODY_DECODERS.get(tag)
    if decoder is None:
        raise DecodeError(f"tag {tag} is not a gossip message")
    return decoder(raw)


def decode_frame(payload: bytes, max_bytes: int = wire.MAX_MESSAGE_BYTES) -> Frame:
    """Decode and check a gossip frame; raise :class:`DecodeError` (and nothing else) for
    another tag or anything malformed."""
    tag, raw = wire.decode(payload, max_bytes=max_bytes)
    if tag not in GOSSIP_TAGS:
        raise DecodeError(f"tag {tag} is not a gossip message")
    updates_raw, progress_raw, body = _fields(raw, 3, "gossip frame")
    updates = [MemberUpdate.from_wire(item) for item in _list(updates_raw, "updates")]
    progress = [Progress.from_wire(item) for item in _list(progress_raw, "progress")]
    return Frame(tag, decode_body(tag, body), updates, progress)
