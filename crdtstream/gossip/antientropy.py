"""δ-interval anti-entropy: a pure core that ships each peer exactly the delta-groups it lacks.

Rules of this file: no clock (time is the ``now_ms`` argument), no I/O (messages leave as
:class:`~crdtstream.gossip.messages.Message` values), randomness only from the injected
``random.Random``.

The algorithm is Almeida, Shoker and Baquero's Algorithm 2 ("Delta State Replicated Data
Types", JPDC 2018, §6) with Enes et al.'s two fixes ("Efficient Synchronization of State-based
CRDTs", ICDE 2019, §4):

- Local changes since the last look are taken from the lattice as one delta-group and appended
  to a sequence-numbered buffer; so is the *inflating* part of every received delta (remove
  redundancy: a group that taught us nothing is never forwarded).
- Each buffered group remembers its origin; the interval shipped to peer ``j`` skips groups
  that came from ``j`` (avoid back-propagation).
- Per peer we keep the sequence number up to which it acknowledged everything. Every
  ``interval_ms`` we pick ``fanout`` of our overlay neighbours (:mod:`.overlay`: about
  ``2·log2 N`` fingers, so an update crosses the network O(N log N) times, not O(N²)) at
  random and ship the interval they lack, or the
  full state when the buffer no longer reaches back that far, when the peer is new to us, or
  when it restarted (its epoch, a random number drawn at start, changed).
- The buffer is garbage-collected below the smallest acknowledgement of the current peers and
  is never longer than ``delta_buffer_groups``.
- A payload larger than a message is split into parts that merge independently; the peer
  merges the parts of one transfer in order (a later part may certify earlier ones, see
  :class:`_InboundTransfers`) and acks each part once merged; the interval counts as delivered
  once every part is acknowledged. A large transfer is resent part by part, not rebuilt, so it
  completes under loss.
- An interval is addressed to one epoch of its peer (the frame says which; a full state is
  addressed to any): an interval built on what the peer's previous process acknowledged would
  hand a restarted peer write counts for cells it no longer has, and a window could look final
  there before its data arrived. The peer drops such an interval unacknowledged (counted in
  ``intervals_for_other_epoch``) and the sender, once it sees the new epoch, sends the full
  state. An interval is only sent to a peer whose epoch is known.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, Generic

from crdtstream import wire
from crdtstream.config import GossipConfig
from crdtstream.errors import MergeError
from crdtstream.gossip.lattice import DecodeDelta, DeltaLattice, DeltaT
from crdtstream.gossip.messages import ANY_EPOCH, DeltaAck, DeltaPart, Message, decode_body
from crdtstream.gossip.overlay import finger_neighbours

__all__ = ["AntiEntropy", "AntiEntropyStats"]

_TRANSFERS_KEPT = 4
"""Transfers remembered per peer, so a late acknowledgement still counts."""

_INBOUND_KEPT = 16
"""Incomplete multi-part transfers held at once (parts beyond a gap wait, unacknowledged)."""


@dataclass(slots=True)
class AntiEntropyStats:
    """Rounds and transfers of one anti-entropy component (``gossip_antientropy`` metrics)."""

    rounds: int = 0
    intervals_sent: int = 0
    full_states_sent: int = 0
    chunks_sent: int = 0
    chunks_resent: int = 0
    deltas_received: int = 0
    deltas_inflating: int = 0
    """Deltas received that changed the local state (the rest were already held)."""
    acks_received: int = 0
    peer_restarts_seen: int = 0
    groups_truncated: int = 0
    intervals_for_other_epoch: int = 0
    """Delta parts built on what an earlier process of this node acknowledged (not merged)."""
    merges_refused: int = 0


@dataclass(slots=True)
class _Transfer:
    upto: int
    chunks: list[bytes]
    unacked: set[int]
    target_epoch: int = ANY_EPOCH


@dataclass(slots=True)
class _PeerProgress:
    epoch: int | None = None
    acked: int | None = None
    transfers: dict[int, _Transfer] = field(default_factory=dict)

    def forget(self) -> None:
        self.acked = None
        self.transfers.clear()


_InboundKey = tuple[str, int, int]
"""(source, its epoch, transfer id)."""


@dataclass(slots=True)
class _Inbound(Generic[DeltaT]):
    count: int
    next_index: int = 0
    held: dict[int, DeltaT] = field(default_factory=dict)


class _InboundTransfers(Generic[DeltaT]):
    """Parts of multi-part transfers, released for merging strictly in index order.

    A delta's trailing parts may carry per-window version counts that certify the data of the
    earlier parts (the store splits that way); merging them first, after a reordering, would
    let a window look complete, and final, before its data arrived.
    """

    def __init__(self) -> None:
        self._pending: dict[_InboundKey, _Inbound[DeltaT]] = {}
        self._completed: dict[_InboundKey, None] = {}

    def accept(
        self, key: _InboundKey, index: int, count: int, delta: DeltaT
    ) -> list[tuple[int, DeltaT]]:
        """Parts (index, delta) that may be merged now, in order; possibly none."""
        if count == 1 or key in self._completed:
            return [(index, delta)]  # nothing to wait for (a duplicate merges idempotently)
        inbound = self._pending.setdefault(key, _Inbound(count))
        if index < inbound.next_index:
            return [(index, delta)]
        inbound.held[index] = delta
        released = []
        while inbound.next_index in inbound.held:
            released.append((inbound.next_index, inbound.held.pop(inbound.next_index)))
            inbound.next_index += 1
        if inbound.next_index >= inbound.count:
            del self._pending[key]
            self._completed[key] = None
        _trim_oldest(self._pending, _INBOUND_KEPT)
        _trim_oldest(self._completed, _INBOUND_KEPT * 8)
        return released


def _trim_oldest(table: dict[Any, Any], limit: int) -> None:
    while len(table) > limit:
        del table[next(iter(table))]


class AntiEntropy(Generic[DeltaT]):
    """Delta-state anti-entropy for one replica of ``lattice``.

    ``delta_bytes_max`` bounds the encoded size of one delta part; the caller leaves room in
    its messages for the envelope around it.
    """

    def __init__(
        self,
        lattice: DeltaLattice[DeltaT],
        decode: DecodeDelta[DeltaT],
        config: GossipConfig,
        rng: random.Random,
        delta_bytes_max: int,
        *,
        node_id: str | None = None,
    ) -> None:
        self.lattice = lattice
        self.node_id = node_id
        self.config = config
        # The epoch tells peers this process restarted (its buffer and acks are gone). The
        # driver seeds ``rng`` from the operating system; the lattice version is mixed in so
        # that even a reused seed gives a new epoch once the state differs.
        self.epoch = (rng.getrandbits(63) + lattice.version * 0x9E3779B97F4A7C15) % (1 << 63)
        self.stats = AntiEntropyStats()
        self._decode = decode
        self._rng = rng
        self._delta_bytes_max = delta_bytes_max
        self._sequence = 0
        self._buffer: dict[int, tuple[DeltaT, str | None]] = {}
        self._buffer_start = 0
        self._peers: dict[str, _PeerProgress] = {}
        self._seen_version = lattice.version
        self._next_round_ms: int | None = None
        self._next_transfer_id = 0
        self._inbound: _InboundTransfers[DeltaT] = _InboundTransfers()
        self._neighbour_cache: tuple[tuple[str, ...], list[str]] = ((), [])

    @property
    def sequence(self) -> int:
        """The number of delta-groups buffered since start (the paper's counter ``c``)."""
        return self._sequence

    @property
    def buffered_groups(self) -> int:
        """Delta-groups currently held for peers that have not acknowledged them."""
        return len(self._buffer)

    def acknowledged(self, peer_id: str) -> int | None:
        """The sequence below which ``peer_id`` acknowledged everything (None: unknown)."""
        progress = self._peers.get(peer_id)
        return None if progress is None else progress.acked

    def tick(self, now_ms: int, peers: Sequence[str]) -> list[Message]:
        """Buffer local changes; once per ``interval_ms`` ship deltas to ``fanout`` of ``peers``."""
        self._capture_local()
        if self._next_round_ms is not None and now_ms < self._next_round_ms:
            return []
        self._next_round_ms = now_ms + self.config.interval_ms
        self.stats.rounds += 1
        neighbours = self.neighbours(peers)
        self._forget_all_but(neighbours)
        self._collect_garbage()
        # A neighbour that acknowledged everything would get nothing: spend the fanout on
        # the ones that lack something, which spreads an update in fewer rounds.
        behind = [peer for peer in neighbours if self._lacks_something(peer)]
        targets = self._rng.sample(behind, min(self.config.fanout, len(behind)))
        messages: list[Message] = []
        for peer_id in targets:
            messages.extend(self._ship_to(peer_id))
        return messages

    def step(self, source: str, tag: int, body: Any) -> list[Message]:
        """Handle a ``GOSSIP_DELTA`` or ``GOSSIP_ACK`` body, plain or already checked by
        :func:`~crdtstream.gossip.messages.decode_frame`; return the replies.

        A plain body (and a delta's bytes) is checked first: a malformed one raises
        :class:`~crdtstream.errors.DecodeError` and changes nothing.
        """
        checked = body if isinstance(body, (DeltaPart, DeltaAck)) else decode_body(tag, body)
        if isinstance(checked, DeltaPart):
            return self.receive_delta(source, checked, self.decode_delta(checked))
        if isinstance(checked, DeltaAck):
            self.receive_ack(source, checked)
        return []

    def decode_delta(self, part: DeltaPart) -> DeltaT:
        """The delta a checked part carries; raises :class:`~crdtstream.errors.DecodeError`."""
        return self._decode(part.data)

    def neighbours(self, peers: Sequence[str]) -> list[str]:
        """The peers this node ships deltas to: its finger overlay (every peer without a
        ``node_id``)."""
        key = tuple(peers)
        if key != self._neighbour_cache[0]:
            chosen = list(key) if self.node_id is None else finger_neighbours(self.node_id, key)
            self._neighbour_cache = (key, chosen)
        return self._neighbour_cache[1]

    def _lacks_something(self, peer_id: str) -> bool:
        progress = self._peers.get(peer_id)
        return progress is None or progress.acked is None or progress.acked < self._sequence

    def _capture_local(self) -> None:
        if self.lattice.version == self._seen_version:
            return
        delta = self.lattice.delta_since(self._seen_version)
        self._seen_version = self.lattice.version
        if not delta.is_empty():
            self._append(delta, None)

    def _append(self, delta: DeltaT, origin: str | None) -> None:
        self._buffer[self._sequence] = (delta, origin)
        self._sequence += 1
        while len(self._buffer) > self.config.delta_buffer_groups:
            del self._buffer[self._buffer_start]
            self._buffer_start += 1
            self.stats.groups_truncated += 1

    def _forget_all_but(self, peers: Sequence[str]) -> None:
        keep = set(peers)
        for peer_id in [p for p in self._peers if p not in keep]:
            del self._peers[peer_id]

    def _collect_garbage(self) -> None:
        acked = [p.acked for p in self._peers.values() if p.acked is not None]
        low = min([*acked, self._sequence])
        while self._buffer_start < low:
            self._buffer.pop(self._buffer_start, None)
            self._buffer_start += 1

    def _ship_to(self, peer_id: str) -> list[Message]:
        progress = self._peers.setdefault(peer_id, _PeerProgress())
        pending = self._large_pending(progress)
        if pending is not None:
            transfer_id, transfer = pending
            self.stats.chunks_resent += len(transfer.unacked)
            return self._chunk_messages(peer_id, transfer_id, transfer, sorted(transfer.unacked))
        full = self._needs_full_state(progress)
        payload = self._payload_for(peer_id, progress)
        if payload is None:
            return []
        chunks = [part.to_bytes() for part in payload.split(self._delta_bytes_max)]
        target = ANY_EPOCH if full or progress.epoch is None else progress.epoch
        transfer = _Transfer(self._sequence, chunks, set(range(len(chunks))), target)
        transfer_id = self._next_transfer_id
        self._next_transfer_id += 1
        progress.transfers[transfer_id] = transfer
        while len(progress.transfers) > _TRANSFERS_KEPT:
            del progress.transfers[next(iter(progress.transfers))]
        return self._chunk_messages(peer_id, transfer_id, transfer, range(len(chunks)))

    @staticmethod
    def _large_pending(progress: _PeerProgress) -> tuple[int, _Transfer] | None:
        # A multi-part transfer is finished before a new one starts: rebuilding it every round
        # would resend every part and, under loss, might never complete.
        for transfer_id, transfer in reversed(progress.transfers.items()):
            if len(transfer.chunks) > 1 and transfer.unacked:
                return transfer_id, transfer
        return None

    def _needs_full_state(self, progress: _PeerProgress) -> bool:
        return (
            progress.acked is None or progress.epoch is None or progress.acked < self._buffer_start
        )

    def _payload_for(self, peer_id: str, progress: _PeerProgress) -> DeltaT | None:
        if self._needs_full_state(progress):
            full = self.lattice.full_state()
            if full.is_empty():
                progress.acked = self._sequence
                return None
            self.stats.full_states_sent += 1
            return full
        acked = progress.acked
        assert acked is not None  # _needs_full_state covers None
        groups = [
            delta
            for delta, origin in (self._buffer[k] for k in range(acked, self._sequence))
            if origin != peer_id
        ]
        if not groups:
            # Everything it lacks came from it: nothing to send, and it holds it all.
            progress.acked = self._sequence
            return None
        self.stats.intervals_sent += 1
        return reduce(lambda left, right: left.join(right), groups)

    def _chunk_messages(
        self, peer_id: str, transfer_id: int, transfer: _Transfer, indexes: Sequence[int] | range
    ) -> list[Message]:
        count = len(transfer.chunks)
        self.stats.chunks_sent += len(indexes)
        return [
            Message(
                peer_id,
                wire.Tag.GOSSIP_DELTA,
                [
                    self.epoch,
                    transfer_id,
                    index,
                    count,
                    transfer.chunks[index],
                    transfer.target_epoch,
                ],
            )
            for index in indexes
        ]

    def _observe_epoch(self, source: str, epoch: int) -> bool:
        """Record ``source``'s epoch; False (and its progress forgotten) when it restarted."""
        progress = self._peers.setdefault(source, _PeerProgress())
        if progress.epoch is None:
            progress.epoch = epoch
        elif progress.epoch != epoch:
            self.stats.peer_restarts_seen += 1
            progress.epoch = epoch
            progress.forget()
            return False
        return True

    def receive_delta(self, source: str, part: DeltaPart, delta: DeltaT) -> list[Message]:
        """Merge a checked delta part (its delta decoded by :meth:`decode_delta`); return the
        acknowledgement. Raises nothing for input the decoders accept."""
        sender_epoch, transfer_id, index, count = (
            part.epoch,
            part.transfer_id,
            part.index,
            part.count,
        )
        target_epoch = part.target_epoch
        self._observe_epoch(source, sender_epoch)
        if target_epoch not in (ANY_EPOCH, self.epoch):
            # Built on what an earlier process of this node acknowledged: not ours to merge. An
            # empty acknowledgement tells the sender our epoch, so it sends the full state next.
            self.stats.intervals_for_other_epoch += 1
            return [
                Message(source, wire.Tag.GOSSIP_ACK, [sender_epoch, self.epoch, transfer_id, []])
            ]
        self.stats.deltas_received += 1
        released = self._inbound.accept((source, sender_epoch, transfer_id), index, count, delta)
        for _, piece in released:
            try:
                self._merge(source, piece)
            except MergeError:
                # A peer whose store parameters differ (say, another HLL precision): nothing
                # of the piece was applied; no acknowledgement, so it is never counted as held.
                self.stats.merges_refused += 1
                return []
        if not released:
            return []  # held until the parts before it arrive; acknowledged once merged
        ack = [sender_epoch, self.epoch, transfer_id, [i for i, _ in released]]
        return [Message(source, wire.Tag.GOSSIP_ACK, ack)]

    def _merge(self, source: str, delta: DeltaT) -> None:
        self._capture_local()
        inflating = self.lattice.merge(delta)
        self._seen_version = self.lattice.version
        if not inflating.is_empty():
            self.stats.deltas_inflating += 1
            self._append(inflating, source)

    def receive_ack(self, source: str, ack: DeltaAck) -> None:
        """Count a checked acknowledgement of delta parts."""
        target_epoch, acker_epoch, transfer_id, indexes = (
            ack.target_epoch,
            ack.acker_epoch,
            ack.transfer_id,
            ack.indexes,
        )
        self.stats.acks_received += 1
        if target_epoch != self.epoch or not self._observe_epoch(source, acker_epoch):
            return
        progress = self._peers[source]
        transfer = progress.transfers.get(transfer_id)
        if transfer is None:
            return
        transfer.unacked.difference_update(indexes)
        if not transfer.unacked:
            del progress.transfers[transfer_id]
            progress.acked = max(progress.acked or 0, transfer.upto)
