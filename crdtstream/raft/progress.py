"""What the leader knows of each voter: replication progress, flow control and votes.

A follower's :class:`Progress` is in one of three states (etcd-io/raft ``design.md``):

* ``PROBE``: we do not know where its log ends; send at most one append per heartbeat and
  walk ``next`` back on rejection.
* ``REPLICATE``: its log matches up to ``match``; stream appends optimistically, at most
  ``max_inflight_appends`` of them unacknowledged (:class:`Inflights`).
* ``SNAPSHOT``: it needs a snapshot; send nothing else until the snapshot lands or fails.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Inflights", "Progress", "ProgressState", "ProgressTracker", "VoteResult"]


class ProgressState(enum.Enum):
    """How the leader currently replicates to one follower."""

    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class VoteResult(enum.Enum):
    """The outcome of an election so far."""

    PENDING = "pending"
    WON = "won"
    LOST = "lost"


class Inflights:
    """The last index of each append sent but not yet acknowledged, oldest first, bounded."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._last_indexes: deque[int] = deque()

    def add(self, last_index: int) -> None:
        """Record an append ending at ``last_index``."""
        if self.full():
            raise RuntimeError("cannot add to full inflights")
        self._last_indexes.append(last_index)

    def free_le(self, index: int) -> None:
        """Forget every append ending at or before ``index`` (acknowledged)."""
        while self._last_indexes and self._last_indexes[0] <= index:
            self._last_indexes.popleft()

    def free_first_one(self) -> None:
        """Forget the oldest append (a heartbeat answer proves the follower is alive)."""
        if self._last_indexes:
            self._last_indexes.popleft()

    def full(self) -> bool:
        """True when no further append may be sent."""
        return len(self._last_indexes) >= self.capacity

    def count(self) -> int:
        """How many appends are unacknowledged."""
        return len(self._last_indexes)

    def reset(self) -> None:
        """Forget everything."""
        self._last_indexes.clear()


@dataclass
class Progress:
    """Replication state of one follower, as the leader sees it."""

    match: int
    next: int
    inflights: Inflights
    state: ProgressState = ProgressState.PROBE
    pending_snapshot: int = 0
    probe_sent: bool = False
    recent_active: bool = False
    snapshot_heartbeats: int = field(default=0)

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_heartbeats = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        """Probe from just after the match (or after a snapshot we just sent)."""
        if self.state is ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        """Stream appends from just after the match."""
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        """Wait for the snapshot at ``snapshot_index`` to be installed."""
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to ``index``; True when it raised the match."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the append after ``rejected``; False when it is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def sent_entries(self, count: int, next_index: int) -> None:
        """Update flow control after sending ``count`` entries starting at ``next_index``."""
        if self.state is ProgressState.REPLICATE:
            if count > 0:
                last = next_index + count - 1
                self.next = last + 1
                self.inflights.add(last)
        elif self.state is ProgressState.PROBE and count > 0:
            self.probe_sent = True

    def is_paused(self) -> bool:
        """True when no append may be sent now."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True


class ProgressTracker:
    """The voter set, each voter's progress, and the votes of the current election."""

    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.progress: dict[str, Progress] = {}
        self.votes: dict[str, bool] = {}

    @property
    def voters(self) -> tuple[str, ...]:
        """The voter ids, sorted so that every iteration order is deterministic."""
        return tuple(sorted(self.progress))

    def quorum(self) -> int:
        """How many voters make a majority."""
        return len(self.progress) // 2 + 1

    def is_singleton(self) -> bool:
        """True when this is a cluster of one voter."""
        return len(self.progress) == 1

    def set_voters(self, voters: Iterable[str], next_index: int) -> None:
        """Make ``voters`` the voter set; new voters start probing at ``next_index``."""
        wanted = set(voters)
        for node_id in list(self.progress):
            if node_id not in wanted:
                del self.progress[node_id]
        for node_id in sorted(wanted):
            if node_id not in self.progress:
                self.progress[node_id] = Progress(0, next_index, Inflights(self.max_inflight))

    def reset_all(self, self_id: str, last_index: int) -> None:
        """Fresh progress for every voter, as at the start of a term."""
        for node_id in self.progress:
            match = last_index if node_id == self_id else 0
            self.progress[node_id] = Progress(match, last_index + 1, Inflights(self.max_inflight))

    def committed_index(self) -> int:
        """The highest index that a majority of voters hold."""
        if not self.progress:
            return 0
        matches = sorted((p.match for p in self.progress.values()), reverse=True)
        return matches[self.quorum() - 1]

    def quorum_active(self, self_id: str) -> bool:
        """True when a majority (counting ourselves) was heard from recently."""
        active = sum(
            1 for node_id, p in self.progress.items() if node_id == self_id or p.recent_active
        )
        return active >= self.quorum()

    def record_vote(self, node_id: str, granted: bool) -> None:
        """Record a vote (the first answer of each voter counts)."""
        self.votes.setdefault(node_id, granted)

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        """Granted and rejected counts among voters, and the outcome."""
        granted = sum(1 for n, v in self.votes.items() if v and n in self.progress)
        rejected = sum(1 for n, v in self.votes.items() if not v and n in self.progress)
        if granted >= self.quorum():
            return granted, rejected, VoteResult.WON
        if rejected >= self.quorum() or len(self.progress) - rejected < self.quorum():
            return granted, rejected, VoteResult.LOST
        return granted, rejected, VoteResult.PENDING

    def reset_votes(self) -> None:
        """Start a new election."""
        self.votes = {}
