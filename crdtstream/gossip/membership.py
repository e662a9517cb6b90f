"""SWIM membership with Lifeguard's refinements: a pure failure detector and member table.

Rules of this file: no clock (``now_ms`` arguments), no I/O (messages leave as
:class:`~crdtstream.gossip.messages.Message` values), randomness only from the injected
``random.Random``.

Protocol (Das, Gupta, Motivala, "SWIM", DSN 2002; Dadgar et al., "Lifeguard", 2017):

- Every protocol period one member (round-robin over a shuffled list, §4.3) is pinged. With no
  ack by ``probe_timeout_ms``, ``indirect_checks`` other members are asked to ping it
  (ping-req, §3.1); a relay that hears nothing answers with a nack (Lifeguard §4.3). With no ack
  by the end of the period the member becomes *suspect* (§4.2).
- A suspicion turns into *dead* after a timeout that starts at its maximum and shrinks as
  independent confirmations arrive (Lifeguard §4.2). A member that hears it is suspected or
  declared dead refutes by raising its incarnation (§4.2).
- Local health awareness (Lifeguard §4.1): failed probes and refutations raise a score that
  stretches this node's probe period, so a slow node accuses others less.
- Updates piggyback on every frame, each sent ``retransmit_multiplier × ⌈log10(n + 1)⌉``
  times (§4.1). A periodic push-pull exchange of the whole table (as memberlist does), also
  with members believed dead, heals the table after partitions.
- Join: until another member is known, the table is pushed to the seed peers. Leave: the node
  marks itself *left* and pushes its table to a few members.
- Every table exchange carries the policy rules' fingerprint; a peer whose rules differ is
  refused (DESIGN §3) and listed in ``rules_mismatches``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from crdtstream import wire
from crdtstream.config import MembershipConfig
from crdtstream.gossip.members import (
    BroadcastQueue,
    Member,
    Suspicion,
    member_update,
    supersedes,
)
from crdtstream.gossip.messages import (
    Body,
    MemberTable,
    MemberUpdate,
    Message,
    Nack,
    Ping,
    ProbeAck,
    decode_body,
)

__all__ = [
    "AWARENESS_MAX_MULTIPLIER",
    "PUSH_PULL_PROBE_PERIODS",
    "Member",
    "Membership",
    "MembershipStats",
    "member_update",
]

AWARENESS_MAX_MULTIPLIER = 8
"""Lifeguard's cap on how far a bad local health score stretches the probe period."""

PUSH_PULL_PROBE_PERIODS = 10
"""A full table exchange happens every this many probe periods."""

SYNC_MEMBERS_MAX = 400
"""Members per push-pull message, so a table of any size fits the message cap."""

PIGGYBACK_UPDATES_MAX = 6
"""Membership updates piggybacked on one frame."""

_LIVE = ("alive", "suspect")


@dataclass(slots=True)
class MembershipStats:
    """Probes and state changes seen by one membership component."""

    probes: int = 0
    probes_failed: int = 0
    suspected: int = 0
    declared_dead: int = 0
    refuted: int = 0
    """Suspicions of this node that it refuted with a higher incarnation."""
    nacks: int = 0
    refused_rules_mismatch: int = 0


@dataclass(slots=True)
class _Probe:
    sequence: int
    target: str
    started_ms: int
    period_ms: int
    indirect_requests: int = 0
    nacks: int = 0
    acked: bool = False


@dataclass(slots=True)
class _Relay:
    requester: str
    requester_sequence: int
    nack_at_ms: int


@dataclass(slots=True)
class _Timers:
    next_probe_ms: int = 0
    next_push_pull_ms: int = 0
    next_join_ms: int = 0
    probe_order: list[str] = field(default_factory=list)


class Membership:
    """The member table of one node and its SWIM failure detector."""

    def __init__(
        self,
        node_id: str,
        address: str,
        replica: str,
        config: MembershipConfig,
        rng: random.Random,
        seeds: Sequence[str] = (),
        rules_fingerprint: str = "",
    ) -> None:
        self.node_id = node_id
        self.rules_fingerprint = rules_fingerprint
        # Peers refused because their policy rules differ: node id -> their fingerprint.
        self.rules_mismatches: dict[str, str] = {}
        self.config = config
        self.seeds = [seed for seed in seeds if seed != node_id]
        self.members: dict[str, Member] = {
            node_id: Member(node_id, address, 0, "alive", replica, 0)
        }
        # Replica ids whose process is gone for good: a member's row moved on to another replica
        # (its node restarted), or this node's own earlier incarnations. Finality needs them.
        self.retired_replicas: set[str] = set()
        self.awareness = 0
        self.stats = MembershipStats()
        self._rng = rng
        self._sequence = 0
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._suspicions: dict[str, Suspicion] = {}
        self._broadcasts = BroadcastQueue()
        self._timers = _Timers()

    @property
    def me(self) -> Member:
        """This node's own row."""
        return self.members[self.node_id]

    @property
    def joined(self) -> bool:
        """True once another member is known (always, for a node started without seeds)."""
        return len(self.members) > 1 or not self.seeds

    def live_peers(self) -> list[str]:
        """Other members currently alive or suspect, in a stable order."""
        return sorted(
            node_id
            for node_id, member in self.members.items()
            if node_id != self.node_id and member.status in _LIVE
        )

    def remove(self, node_id: str, now_ms: int) -> bool:
        """An operator's removal of a member that is gone for good (its data with it): its
        replica is marked removed, a claim every node applies and spreads whatever incarnation
        it holds, so it no longer holds finality back. Removing a node that is in fact only
        paused breaks the promise that a final value never changes; a removed node must come
        back with a wiped data directory. True when the table changed."""
        member = self.members.get(node_id)
        if member is None or node_id == self.node_id or member.status == "removed":
            return False
        return self.apply(member_update(member, "removed", self.node_id), now_ms)

    def live_members(self) -> list[Member]:
        """Every member alive or suspect, this node included."""
        return [m for m in self.members.values() if m.status in _LIVE]

    # ------------------------------------------------------------------ ticks

    def tick(self, now_ms: int) -> list[Message]:
        """Advance timers: join retries, suspicion expiry, probing, relays, push-pull."""
        messages: list[Message] = []
        self._expire_suspicions(now_ms)
        if not self.live_peers() and self.seeds and now_ms >= self._timers.next_join_ms:
            self._timers.next_join_ms = now_ms + self.config.probe_interval_ms
            messages.extend(self._sync_messages(seed, wire.Tag.SWIM_SYNC) for seed in self.seeds)
        messages.extend(self._tick_probe(now_ms))
        messages.extend(self._expire_relays(now_ms))
        if now_ms >= self._timers.next_push_pull_ms:
            self._timers.next_push_pull_ms = now_ms + self._push_pull_period_ms()
            messages.extend(self._push_pull())
        return messages

    def leave(self, now_ms: int) -> list[Message]:
        """Leave gracefully: mark this node left and push the table to a few live members."""
        me = self.me
        me.incarnation += 1
        me.status, me.status_since_ms = "left", now_ms
        self._broadcast(me.as_update(self.node_id))
        peers = self.live_peers()
        chosen = self._rng.sample(peers, min(3, len(peers)))
        return [self._sync_messages(peer, wire.Tag.SWIM_SYNC) for peer in chosen]

    def _push_pull_period_ms(self) -> int:
        return PUSH_PULL_PROBE_PERIODS * self.config.probe_interval_ms

    def _push_pull(self) -> list[Message]:
        # Members believed dead are candidates too: that is how a healed partition finds out.
        candidates = sorted(
            node_id
            for node_id, m in self.members.items()
            if node_id != self.node_id and m.status not in ("left", "removed")
        )
        if not candidates:
            return []
        return [self._sync_messages(self._rng.choice(candidates), wire.Tag.SWIM_SYNC)]

    def _sync_messages(self, peer_id: str, tag: int) -> Message:
        rows = [m.as_update(self.node_id).to_wire() for m in self.members.values()]
        if len(rows) > SYNC_MEMBERS_MAX:
            # This node first, then a random sample: repeated exchanges cover the whole table.
            others = self._rng.sample(rows[1:], SYNC_MEMBERS_MAX - 1)
            rows = [rows[0], *others]
        return Message(peer_id, tag, [rows, self.rules_fingerprint])

    def _tick_probe(self, now_ms: int) -> list[Message]:
        messages: list[Message] = []
        probe = self._probe
        if (
            probe is not None
            and not probe.acked
            and probe.indirect_requests == 0
            and now_ms >= probe.started_ms + self._scaled(self.config.probe_timeout_ms)
        ):
            messages.extend(self._request_indirect(probe))
        if probe is not None and now_ms >= probe.started_ms + probe.period_ms:
            self._finish_probe(probe, now_ms)
            probe = self._probe = None
        if probe is None and now_ms >= self._timers.next_probe_ms:
            messages.extend(self._start_probe(now_ms))
        return messages

    def _scaled(self, duration_ms: int) -> int:
        return duration_ms * (self.awareness + 1)

    def _start_probe(self, now_ms: int) -> list[Message]:
        period_ms = self._scaled(self.config.probe_interval_ms)
        self._timers.next_probe_ms = now_ms + period_ms
        target = self._next_probe_target()
        if target is None:
            return []
        self._sequence += 1
        self._probe = _Probe(self._sequence, target, now_ms, period_ms)
        self.stats.probes += 1
        return [Message(target, wire.Tag.SWIM_PING, [self._sequence, target])]

    def _next_probe_target(self) -> str | None:
        order = self._timers.probe_order
        while order:
            candidate = order.pop()
            member = self.members.get(candidate)
            if member is not None and member.status in _LIVE and candidate != self.node_id:
                return candidate
        order.extend(self.live_peers())
        self._rng.shuffle(order)
        return order.pop() if order else None

    def _request_indirect(self, probe: _Probe) -> list[Message]:
        helpers = [p for p in self.live_peers() if p != probe.target]
        chosen = self._rng.sample(helpers, min(self.config.indirect_checks, len(helpers)))
        probe.indirect_requests = max(1, len(chosen))
        body = [probe.sequence, probe.target]
        return [Message(helper, wire.Tag.SWIM_PING_REQ, body) for helper in chosen]

    def _finish_probe(self, probe: _Probe, now_ms: int) -> None:
        if probe.acked:
            self.awareness = max(0, self.awareness - 1)
            return
        self.stats.probes_failed += 1
        if probe.nacks < probe.indirect_requests:
            # Relays that did not even answer with a nack suggest the problem is here.
            self.awareness = min(AWARENESS_MAX_MULTIPLIER - 1, self.awareness + 1)
        member = self.members.get(probe.target)
        if member is not None and member.status == "alive":
            self.apply(member_update(member, "suspect", self.node_id), now_ms)

    def _expire_relays(self, now_ms: int) -> list[Message]:
        expired = [seq for seq, relay in self._relays.items() if now_ms >= relay.nack_at_ms]
        messages = []
        for sequence in expired:
            relay = self._relays.pop(sequence)
            messages.append(
                Message(relay.requester, wire.Tag.SWIM_NACK, [relay.requester_sequence])
            )
        return messages

    def _expire_suspicions(self, now_ms: int) -> None:
        for node_id, suspicion in list(self._suspicions.items()):
            if suspicion.expired(now_ms):
                member = self.members[node_id]
                self.apply(member_update(member, "dead", self.node_id), now_ms)

    # ------------------------------------------------------------------ messages

    def step(self, source: str, tag: int, body: Any, now_ms: int) -> list[Message]:
        """Handle one plain SWIM message body from ``source``; return the replies.

        The body is checked first: a malformed one raises
        :class:`~crdtstream.errors.DecodeError` and changes nothing.
        """
        return self.receive(source, tag, decode_body(tag, body), now_ms)

    def receive(self, source: str, tag: int, body: Body, now_ms: int) -> list[Message]:
        """Handle one checked SWIM message body (from :func:`decode_frame`); return the
        replies. Raises nothing for any body :func:`decode_body` accepts."""
        if isinstance(body, Ping) and tag == wire.Tag.SWIM_PING:
            return [Message(source, wire.Tag.SWIM_ACK, [body.sequence, self.node_id])]
        if isinstance(body, Ping):
            return self._relay_ping(source, body.sequence, body.target, now_ms)
        if isinstance(body, ProbeAck):
            return self._receive_ack(body.sequence)
        if isinstance(body, Nack):
            if self._probe is not None and self._probe.sequence == body.sequence:
                self._probe.nacks += 1
                self.stats.nacks += 1
            return []
        if isinstance(body, MemberTable):
            return self._receive_sync(source, tag, body, now_ms)
        return []

    def _receive_sync(self, source: str, tag: int, body: MemberTable, now_ms: int) -> list[Message]:
        fingerprint = body.rules_fingerprint
        if fingerprint != self.rules_fingerprint:
            # DESIGN §3: all nodes must hold the same policy rules; a mismatch is refused
            # (counted, and the peer is listed in ``rules_mismatches`` for status pages). The
            # reply carries our fingerprint only, so the other side refuses us as well.
            self.stats.refused_rules_mismatch += 1
            self.rules_mismatches[source] = fingerprint
            if tag == wire.Tag.SWIM_SYNC:
                return [Message(source, wire.Tag.SWIM_SYNC_REPLY, [[], self.rules_fingerprint])]
            return []
        self.rules_mismatches.pop(source, None)
        for update in body.rows:
            self.apply(update, now_ms)
        if tag == wire.Tag.SWIM_SYNC:
            return [self._sync_messages(source, wire.Tag.SWIM_SYNC_REPLY)]
        return []

    def _receive_ack(self, sequence: int) -> list[Message]:
        if self._probe is not None and self._probe.sequence == sequence:
            self._probe.acked = True
            return []
        relay = self._relays.pop(sequence, None)
        if relay is None:
            return []
        return [Message(relay.requester, wire.Tag.SWIM_ACK, [relay.requester_sequence, ""])]

    def _relay_ping(self, requester: str, sequence: int, target: str, now_ms: int) -> list[Message]:
        self._sequence += 1
        nack_at_ms = now_ms + self.config.probe_timeout_ms * 4 // 5
        self._relays[self._sequence] = _Relay(requester, sequence, nack_at_ms)
        return [Message(target, wire.Tag.SWIM_PING, [self._sequence, target])]

    # ------------------------------------------------------------------ updates

    def piggyback(self) -> list[MemberUpdate]:
        """Updates to attach to an outgoing frame, least-sent first; each sent a bounded number
        of times."""
        if not self._broadcasts:
            return []
        return self._broadcasts.take(PIGGYBACK_UPDATES_MAX, self._retransmit_limit())

    def _retransmit_limit(self) -> int:
        count = len(self.live_members())
        return self.config.retransmit_multiplier * max(1, math.ceil(math.log10(count + 1)))

    def _broadcast(self, update: MemberUpdate) -> None:
        self._broadcasts.push(update)

    def apply(self, update: MemberUpdate, now_ms: int) -> bool:
        """Apply a claim about a member by SWIM's incarnation rules; True when it changed
        the table (and will be passed on)."""
        if update.node_id == self.node_id:
            self._refute_if_needed(update)
            return False
        current = self.members.get(update.node_id)
        if current is None:
            return self._add(update, now_ms)
        if not supersedes(update, current):
            if update.status == "suspect" and current.status == "suspect":
                self._confirm(update)
            return False
        if current.replica and current.replica != update.replica:
            self.retired_replicas.add(current.replica)  # a newer incarnation replaced it
        current.incarnation = update.incarnation
        current.address, current.replica = update.address, update.replica
        current.status, current.status_since_ms = update.status, now_ms
        self._suspicions.pop(update.node_id, None)
        if update.status == "suspect":
            self._start_suspicion(update, now_ms)
        self._count_transition(update.status)
        self._broadcast(current.as_update(update.origin))
        return True

    def _add(self, update: MemberUpdate, now_ms: int) -> bool:
        self.members[update.node_id] = Member(
            update.node_id,
            update.address,
            update.incarnation,
            update.status,
            update.replica,
            now_ms,
        )
        if update.status == "suspect":
            self._start_suspicion(update, now_ms)
        self._broadcast(update)
        return True

    def _count_transition(self, status: str) -> None:
        if status == "suspect":
            self.stats.suspected += 1
        elif status == "dead":
            self.stats.declared_dead += 1

    def _confirm(self, update: MemberUpdate) -> None:
        suspicion = self._suspicions.get(update.node_id)
        current = self.members[update.node_id]
        if (
            suspicion is not None
            and update.incarnation == current.incarnation
            and suspicion.confirm(update.origin)
        ):
            self._broadcast(update)

    def _start_suspicion(self, update: MemberUpdate, now_ms: int) -> None:
        count = len(self.live_members())
        self._suspicions[update.node_id] = Suspicion.start(
            update.origin, now_ms, count, self.config
        )

    def _refute_if_needed(self, update: MemberUpdate) -> None:
        me = self.me
        if me.status in ("left", "removed"):
            return
        accused = update.status in ("suspect", "dead", "left", "removed")
        # A row for this node's id from an earlier life (another replica or address) is
        # overturned the same way as an accusation.
        stale = update.replica != me.replica or update.address != me.address
        if update.replica and update.replica != me.replica:
            self.retired_replicas.add(update.replica)  # an earlier incarnation of this node
        same = update.incarnation == me.incarnation
        if update.incarnation > me.incarnation or (same and (accused or stale)):
            me.incarnation = update.incarnation + 1
            self._broadcast(me.as_update(self.node_id))
            if accused:
                self.stats.refuted += 1
                self.awareness = min(AWARENESS_MAX_MULTIPLIER - 1, self.awareness + 1)
