"""The gossip core of one node: anti-entropy, membership, finality and the catalog behind one
``tick`` / ``step`` pair, with bytes in and bytes out.

Rules of this file: pure (no clock, no I/O, injected randomness). The driver calls
:meth:`GossipCore.tick` on a timer and :meth:`GossipCore.step` for every packet received, and
sends every returned :class:`~crdtstream.gossip.messages.Outgoing` through its transport; it
adds transport peers for the members in :attr:`GossipCore.membership` as they appear.

Every frame carries piggyback: a few membership updates and progress records (this node's own
watermark and per-window write counts, plus a couple of others' for transitive spread). No frame
exceeds ``GossipConfig.chunk_bytes_max``: delta parts are sized to leave room for the envelope,
and the piggyback is dropped from a frame that would otherwise be too large.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol

from crdtstream import wire
from crdtstream.config import GossipConfig, MembershipConfig, WindowConfig
from crdtstream.errors import DecodeError
from crdtstream.gossip.antientropy import AntiEntropy
from crdtstream.gossip.finality import ProgressTable, window_is_final
from crdtstream.gossip.lattice import DecodeDelta, DeltaLattice, DeltaT
from crdtstream.gossip.membership import Membership
from crdtstream.gossip.messages import (
    NO_WATERMARK_MS,
    Body,
    CatalogBody,
    DeltaAck,
    DeltaPart,
    Message,
    NoBody,
    Outgoing,
    Progress,
    decode_frame,
    encode_frame,
)

__all__ = ["CatalogSync", "GossipCore", "GossipStats"]

ENVELOPE_BYTES_RESERVED = 2048
"""Room left in each frame for the envelope and piggyback around a delta part."""

PROGRESS_PIGGYBACK_OTHERS = 2
"""Other replicas' progress records attached to each frame, besides this node's own."""

_JOIN_TAGS = frozenset({wire.Tag.SWIM_SYNC, wire.Tag.SWIM_SYNC_REPLY})

_GONE = ("left", "removed")
"""Member states whose replica will write no more (see ``crdtstream.gossip.finality``)."""


@dataclass(slots=True)
class GossipStats:
    """Frames and bytes through one gossip core (the ``gossip`` section of ``/v1/status``)."""

    frames_sent: int = 0
    bytes_sent: int = 0
    delta_bytes_sent: int = 0
    """The part of ``bytes_sent`` in delta frames."""
    frames_received: int = 0
    bytes_received: int = 0
    malformed_received: int = 0
    """Frames that failed to decode (counted and dropped)."""
    piggyback_dropped_for_size: int = 0
    """Frames sent without their membership piggyback because it would not fit."""
    refused_rules_mismatch: int = 0
    """Frames dropped because their sender holds other policy rules."""


class CatalogSync(Protocol):
    """What the core needs from the key catalog to synchronise it (see ``catalog.py``)."""

    def tick(self, now_ms: int, peers: Sequence[str]) -> list[Message]:
        """Periodic sync messages."""
        ...

    def step(self, source: str, body: Any) -> list[Message]:
        """Handle one catalog message body; return replies."""
        ...


class GossipCore(Generic[DeltaT]):
    """One node's gossip: a pure state machine from ticks and packets to packets.

    ``rules_fingerprint`` (e.g. ``Catalog.rules_fingerprint()`` or a digest of the configured
    policy) is compared when peers meet; frames from a peer with other rules are refused and
    counted in ``stats.refused_rules_mismatch``.
    """

    def __init__(
        self,
        node_id: str,
        address: str,
        replica: str,
        lattice: DeltaLattice[DeltaT],
        decode: DecodeDelta[DeltaT],
        *,
        rng: random.Random,
        gossip: GossipConfig | None = None,
        membership: MembershipConfig | None = None,
        window: WindowConfig | None = None,
        seeds: Sequence[str] = (),
        catalog: CatalogSync | None = None,
        rules_fingerprint: str = "",
    ) -> None:
        self.node_id = node_id
        self.replica = replica
        self.lattice = lattice
        self.gossip_config = gossip or GossipConfig()
        self.window_config = window or WindowConfig()
        self.frame_bytes_max = self.gossip_config.chunk_bytes_max
        reserve = min(ENVELOPE_BYTES_RESERVED, self.frame_bytes_max // 2)
        self.anti_entropy = AntiEntropy(
            lattice,
            decode,
            self.gossip_config,
            rng,
            self.frame_bytes_max - reserve,
            node_id=node_id,
        )
        self.membership = Membership(
            node_id,
            address,
            replica,
            membership or MembershipConfig(),
            rng,
            seeds,
            rules_fingerprint,
        )
        self.progress = ProgressTable(self.window_config.retention_windows)
        self.catalog = catalog
        self.stats = GossipStats()
        self._rng = rng
        self._progress_order: list[str] = []
        self._progress_sent_ms: dict[str, int] = {}
        self._progress_version = -1
        self._progress_watermark_ms: int | None = -1
        self._progress_sealed: frozenset[str] = frozenset()
        # Replicas other nodes sealed: they only seal replicas known to be retired.
        self._learned_retired: set[str] = set()
        self._own_prefix = f"{node_id}~"
        self._own_predecessors: set[str] = set()

    def tick(self, now_ms: int) -> list[Outgoing]:
        """Advance every timer; return the frames to send."""
        self._refresh_own_progress()
        messages = self.membership.tick(now_ms)
        peers = self.membership.live_peers()
        rounds = self.anti_entropy.stats.rounds
        shipped = self.anti_entropy.tick(now_ms, peers)
        messages += shipped
        if not shipped and peers and self.anti_entropy.stats.rounds > rounds:
            # An idle round still carries this node's watermark, so windows go final.
            peer = peers[self._rng.randrange(len(peers))]
            messages.append(Message(peer, wire.Tag.GOSSIP_PROGRESS, []))
        if self.catalog is not None:
            messages += self.catalog.tick(now_ms, peers)
        return self._encode(messages, now_ms)

    def step(self, source: str, payload: bytes, now_ms: int) -> list[Outgoing]:
        """Handle one received packet; malformed input is counted and ignored.

        Whether a packet is malformed is decided while decoding it (the frame, its piggyback,
        its body and a delta's bytes), before any state changes; the handlers then run outside
        any ``except``, so an exception they raise is a bug and propagates.
        """
        self.stats.frames_received += 1
        self.stats.bytes_received += len(payload)
        try:
            frame = decode_frame(payload)
            delta = (
                self.anti_entropy.decode_delta(frame.body)
                if isinstance(frame.body, DeltaPart)
                else None
            )
        except DecodeError:
            self.stats.malformed_received += 1
            return []
        # A table exchange decides whether the peer's rules match before its piggyback is
        # believed; any other frame from a refused peer is dropped.
        joining = frame.tag in _JOIN_TAGS
        messages = self._dispatch(source, frame.tag, frame.body, delta, now_ms) if joining else []
        if source in self.membership.rules_mismatches:
            self.stats.refused_rules_mismatch += 1
            return self._encode(messages, now_ms)
        for update in frame.updates:
            self.membership.apply(update, now_ms)
        for record in frame.progress:
            self._merge_progress(record)
        if not joining:
            messages = self._dispatch(source, frame.tag, frame.body, delta, now_ms)
        return self._encode(messages, now_ms)

    def leave(self, now_ms: int) -> list[Outgoing]:
        """Leave the cluster gracefully; send the returned frames, then stop."""
        return self._encode(self.membership.leave(now_ms), now_ms)

    def remove_member(self, node_id: str, now_ms: int) -> bool:
        """Remove a member that is gone for good (see :meth:`Membership.remove`)."""
        return self.membership.remove(node_id, now_ms)

    def retired_replicas(self) -> frozenset[str]:
        """Replica ids known to write no more, ever: replaced by a restart, left, or removed."""
        membership = self.membership
        retired = set(membership.retired_replicas) | self._learned_retired
        current = set()
        for member in membership.members.values():
            if member.status in _GONE:
                retired.add(member.replica)
            else:
                current.add(member.replica)
        # This node's own earlier incarnations (found in restored or merged state): one process
        # per node id runs at a time, so they are certainly gone.
        retired.update(self._own_predecessors)
        # A replica that is some member's current one again (a node that left and came back
        # with its data) writes again: it must close windows itself.
        retired -= current
        retired.discard(self.replica)
        return frozenset(retired)

    def is_final(self, start_ms: int, end_ms: int) -> bool:
        """Whether the window ``[start_ms, end_ms)`` is final on this node: its value here will
        never change again (the rule is in :mod:`crdtstream.gossip.finality`)."""
        self._refresh_own_progress()
        if not self.membership.joined:
            return False  # members not heard of yet could still hold writes to the window
        reporters = [
            member.replica
            for member in self.membership.members.values()
            if member.status not in _GONE
        ]
        return window_is_final(
            start_ms,
            end_ms,
            reporters,
            self.progress.records,
            self.lattice.window_versions(start_ms),
            self.retired_replicas(),
        )

    def _dispatch(
        self, source: str, tag: int, body: Body, delta: DeltaT | None, now_ms: int
    ) -> list[Message]:
        if isinstance(body, DeltaPart):
            assert delta is not None, "a delta part arrives with its decoded delta"
            return self.anti_entropy.receive_delta(source, body, delta)
        if isinstance(body, DeltaAck):
            self.anti_entropy.receive_ack(source, body)
            return []
        if isinstance(body, NoBody):
            return []  # its piggyback was all it carried
        if isinstance(body, CatalogBody):
            if self.catalog is None:
                return []
            try:
                # The Yjs library decodes and applies a sync message in one call, so its
                # refusal of bad bytes (translated to DecodeError in catalog.py) comes here.
                return self.catalog.step(source, [body.flags, body.message])
            except DecodeError:
                self.stats.malformed_received += 1
                return []
        return self.membership.receive(source, tag, body, now_ms)

    def _note_own_predecessors(self, replicas: Iterable[str]) -> None:
        """Remember this node's earlier incarnations among ``replicas`` (ids start with the node
        id, see :func:`crdtstream.ids.new_replica_id`)."""
        for replica in replicas:
            if replica.startswith(self._own_prefix) and replica != self.replica:
                self._own_predecessors.add(replica)

    def _merge_progress(self, record: Progress) -> None:
        self._note_own_predecessors((record.replica,))
        if record.replica not in self.progress.records:
            self._progress_order.append(record.replica)
        if record.replica != self.replica:
            self._learned_retired.update(record.sealed)
        self.progress.merge(record)

    def _refresh_own_progress(self) -> None:
        lattice = self.lattice
        sealed = self.retired_replicas()
        if (
            lattice.version == self._progress_version
            and lattice.watermark_ms == self._progress_watermark_ms
            and sealed == self._progress_sealed
        ):
            return
        self._progress_version = lattice.version
        self._progress_watermark_ms = lattice.watermark_ms
        self._progress_sealed = sealed
        writes = {}
        held: dict[int, dict[str, int]] = {}
        for start in lattice.window_starts():
            versions = dict(lattice.window_versions(start))
            count = versions.pop(self.replica, 0)
            self._note_own_predecessors(versions)
            if count:
                writes[start] = count
            others = {replica: count for replica, count in versions.items() if count}
            if others:
                held[start] = others
        watermark_ms = lattice.watermark_ms
        if watermark_ms is None:
            watermark_ms = NO_WATERMARK_MS
        sealed = self._progress_sealed = self.retired_replicas()
        # The holdings go out with the seals in one record: held counts of a sealed replica
        # are taken after this node knew it retired (see finality.py, rule 2b).
        self._merge_progress(Progress(self.replica, watermark_ms, writes, held, sealed))

    def _piggyback_progress(self, peer_id: str, now_ms: int) -> list[Progress]:
        # Records are a few hundred bytes (a count per retained window): at most one batch per
        # peer per gossip interval, so small frames such as acks stay small.
        last_ms = self._progress_sent_ms.get(peer_id)
        if last_ms is not None and now_ms - last_ms < self.gossip_config.interval_ms:
            return []
        self._progress_sent_ms[peer_id] = now_ms
        records = self.progress.records
        chosen = [records[self.replica]] if self.replica in records else []
        order = self._progress_order
        for _ in range(min(PROGRESS_PIGGYBACK_OTHERS, len(order))):
            replica = order[self._rng.randrange(len(order))]
            if replica != self.replica:
                chosen.append(records[replica])
        return chosen

    def _encode(self, messages: list[Message], now_ms: int) -> list[Outgoing]:
        out = []
        for message in messages:
            updates = self.membership.piggyback()
            progress = self._piggyback_progress(message.peer_id, now_ms)
            payload = encode_frame(message.tag, message.body, updates, progress)
            if len(payload) > self.frame_bytes_max:
                self.stats.piggyback_dropped_for_size += 1
                payload = encode_frame(message.tag, message.body, [], [])
            self.stats.frames_sent += 1
            self.stats.bytes_sent += len(payload)
            if message.tag == wire.Tag.GOSSIP_DELTA:
                self.stats.delta_bytes_sent += len(payload)
            out.append(Outgoing(message.peer_id, payload))
        return out
