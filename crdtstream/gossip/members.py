"""The member table's pieces: rows, SWIM's order of claims, Lifeguard's suspicion timeout, and
the queue of membership updates to piggyback.

Pure helpers of :mod:`crdtstream.gossip.membership`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from crdtstream.config import MembershipConfig
from crdtstream.gossip.messages import MemberUpdate

__all__ = ["BroadcastQueue", "Member", "Suspicion", "member_update", "supersedes"]


@dataclass(slots=True)
class Suspicion:
    """One member under suspicion: when it started and who independently confirmed it.

    Reference: Lifeguard §4.2 and memberlist ``suspicion.go``. The timeout starts at
    ``timeout_ms_max`` and falls logarithmically towards ``timeout_ms_min`` as confirmations
    from other members arrive, reaching it with ``expected_confirmations`` of them.
    """

    started_ms: int
    confirmations: set[str]
    expected_confirmations: int
    timeout_ms_min: int
    timeout_ms_max: int

    @classmethod
    def start(
        cls, origin: str, now_ms: int, member_count: int, config: MembershipConfig
    ) -> Suspicion:
        """A suspicion raised by ``origin`` in a cluster of ``member_count`` live members."""
        timeout_ms_min = int(
            config.suspicion_multiplier
            * max(1.0, math.log10(max(member_count, 1)))
            * config.probe_interval_ms
        )
        expected = config.suspicion_multiplier - 2
        if member_count - 2 < expected:
            expected = 0  # too few members to expect that many confirmations
        timeout_ms_max = timeout_ms_min * config.suspicion_max_timeout_multiplier
        return cls(now_ms, {origin}, expected, timeout_ms_min, timeout_ms_max)

    def confirm(self, origin: str) -> bool:
        """Count ``origin``'s confirmation; True when it is a new one."""
        if origin in self.confirmations:
            return False
        self.confirmations.add(origin)
        return True

    def timeout_ms(self) -> int:
        """The current timeout, shortened by the confirmations so far."""
        confirmed = len(self.confirmations) - 1
        if self.expected_confirmations < 1:
            return self.timeout_ms_min
        if confirmed < 1:
            return self.timeout_ms_max
        fraction = math.log(confirmed + 1) / math.log(self.expected_confirmations + 1)
        span = self.timeout_ms_max - self.timeout_ms_min
        return max(self.timeout_ms_min, int(self.timeout_ms_max - fraction * span))

    def expired(self, now_ms: int) -> bool:
        """Whether the suspected member should now be declared dead."""
        return now_ms >= self.started_ms + self.timeout_ms()


@dataclass(slots=True)
class _Broadcast:
    update: MemberUpdate
    transmissions: int = 0


class BroadcastQueue:
    """Membership updates waiting to ride on outgoing frames, newest claim per member.

    Reference: SWIM §4.1 — each update is piggybacked a bounded number of times, least-sent
    first, which spreads it to every member with high probability.
    """

    def __init__(self) -> None:
        self._pending: dict[str, _Broadcast] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def push(self, update: MemberUpdate) -> None:
        """Queue ``update``, replacing any older claim about the same member."""
        self._pending[update.node_id] = _Broadcast(update)

    def take(self, count: int, transmissions_max: int) -> list[MemberUpdate]:
        """Up to ``count`` updates for one frame; each leaves after ``transmissions_max``."""
        if not self._pending:
            return []
        chosen = sorted(self._pending.values(), key=lambda b: b.transmissions)[:count]
        for broadcast in chosen:
            broadcast.transmissions += 1
            if broadcast.transmissions >= transmissions_max:
                del self._pending[broadcast.update.node_id]
        return [broadcast.update for broadcast in chosen]


@dataclass(slots=True)
class Member:
    """One row of the member table."""

    node_id: str
    address: str
    incarnation: int
    status: str
    replica: str
    status_since_ms: int

    def as_update(self, origin: str) -> MemberUpdate:
        """This row as a claim made by ``origin``."""
        return MemberUpdate(
            self.node_id, self.address, self.incarnation, self.status, self.replica, origin
        )


_PRECEDENCE = {"alive": 0, "suspect": 1, "dead": 2, "left": 3, "removed": 4}


def supersedes(update: MemberUpdate, current: Member) -> bool:
    """SWIM's order: a higher incarnation wins; at the same one, suspect beats alive and dead
    or left beats both (alive needs a strictly higher incarnation to overturn anything).

    A removal is an operator's decision, not a guess: it overturns any claim about the same
    replica whatever its incarnation, and nothing but a new replica (a new life of the node,
    with its data wiped) overturns it.
    """
    if current.status == "removed":
        return update.replica != current.replica and update.incarnation > current.incarnation
    if update.status == "removed":
        return update.replica == current.replica
    if update.incarnation != current.incarnation:
        return update.incarnation > current.incarnation
    return _PRECEDENCE[update.status] > _PRECEDENCE[current.status] and update.status != "alive"


def member_update(member: Member, status: str, origin: str) -> MemberUpdate:
    """A claim by ``origin`` that ``member`` now has ``status`` at its current incarnation."""
    return MemberUpdate(
        member.node_id, member.address, member.incarnation, status, member.replica, origin
    )
