"""Linearizable reads by ReadIndex (Raft §8), batched into heartbeat rounds.

A read arriving at the leader records the commit index of that moment as its read index. It may be
served once a majority has answered a heartbeat *sent after it arrived*: that proves no other
leader had been elected when the read arrived, so the read index covers every write acknowledged
before the read began. Heartbeats carry a round number (8 bytes, little endian) that followers
echo. A read joins the newest round if that round's heartbeats have not yet been handed to the
driver (they will leave after the read arrived), otherwise the next round. At most one round is
in flight for reads, so any number of reads arriving meanwhile share the next round. Periodic
heartbeats also carry the newest round, which makes lost heartbeats harmless.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["PendingRead", "ReadOnly", "decode_round", "encode_round"]

_ROUND_BYTES = 8


def encode_round(round_number: int) -> bytes:
    """The heartbeat context for ``round_number``."""
    return round_number.to_bytes(_ROUND_BYTES, "little")


def decode_round(context: bytes) -> int | None:
    """The round number in a heartbeat context, or None when it is not one."""
    if len(context) != _ROUND_BYTES:
        return None
    return int.from_bytes(context, "little")


@dataclass(frozen=True, slots=True)
class PendingRead:
    """A read waiting for its heartbeat round; ``requester`` is None for a local read."""

    index: int
    request_ctx: bytes
    requester: str | None
    round_number: int


class ReadOnly:
    """Reads waiting for leadership confirmation, in arrival order (hence in round order)."""

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self.pending: deque[PendingRead] = deque()
        self.sent_round = 0
        self.round_unsent = False
        self.acks: dict[str, int] = {}

    def add(self, index: int, request_ctx: bytes, requester: str | None) -> bool:
        """Queue a read; returns False (read dropped) when the queue is full."""
        if len(self.pending) >= self.max_pending:
            return False
        round_number = self.sent_round if self.round_unsent else self.sent_round + 1
        self.pending.append(PendingRead(index, request_ctx, requester, round_number))
        return True

    def round_in_flight(self) -> bool:
        """True while some queued read waits for a round already sent."""
        return bool(self.pending) and self.pending[0].round_number <= self.sent_round

    def needs_round(self) -> bool:
        """True when queued reads wait for a round not yet sent."""
        return bool(self.pending) and self.pending[-1].round_number > self.sent_round

    def start_round(self) -> None:
        """A new round is about to be broadcast."""
        self.sent_round += 1
        self.round_unsent = True

    def messages_handed_out(self) -> None:
        """The queued messages (with any round's heartbeats) left for the driver to send."""
        self.round_unsent = False

    def context(self) -> bytes:
        """The heartbeat context of the newest round."""
        return encode_round(self.sent_round)

    def ack(self, node_id: str, context: bytes) -> None:
        """A follower echoed ``context`` in a heartbeat answer of this term."""
        round_number = decode_round(context)
        if round_number is not None and round_number <= self.sent_round:
            self.acks[node_id] = max(self.acks.get(node_id, 0), round_number)

    def release_confirmed(
        self, voters: Iterable[str], self_id: str, quorum: int
    ) -> list[PendingRead]:
        """Remove and return every read whose round a majority of voters has answered."""
        rounds = sorted(
            (self.sent_round if v == self_id else self.acks.get(v, 0) for v in voters),
            reverse=True,
        )
        if len(rounds) < quorum:
            return []
        confirmed = rounds[quorum - 1]
        released: list[PendingRead] = []
        while self.pending and self.pending[0].round_number <= confirmed:
            released.append(self.pending.popleft())
        return released
