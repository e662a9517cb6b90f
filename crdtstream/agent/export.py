"""One exporter per (key, window) across the cluster: who pushes a final window to a sink.

Every node holds every key, so a naive push from each node would multiply the data by the
cluster size. Instead, when a window becomes final on a node, the node fixes the window's plan:
the **eligible** members (not left or removed, and exporting since this window or earlier) and,
for each key, its **owner** by rendezvous hashing of the key over them. A node enqueues the
keys it owns. Finality makes the plan the same on every node: a window is final only once
every live member's writes to it are merged, and every exporting member writes its markers
(below) into every window, so the markers deciding eligibility are known when it is planned.

Progress is gossiped through two reserved keys per node, written into the node's own store
like any key (``max`` registers, so they merge and spread by gossip):

- ``__crdtstream.export_from#node:ID``: the first window this run of ID exports;
- ``__crdtstream.export_done#node:ID``: every window up to this one has left ID's sink.

**Takeover.** When an owner has left or been removed by an operator and its ``done`` marker is
older than a window, the keys it owned in that window are re-owned by rendezvous over the
eligible members that remain, and the new owner exports them. When the owner flushed and then
left, its ``done`` marker (written after the flush succeeded) tells the others not to export
again. A member merely believed dead is not taken over: the verdict is a guess (a paused or
partitioned node may still be flushing), as it is for window finality, so its keys wait until
it comes back or is removed.

What this does not promise, honestly: an owner that flushes and is removed within one gossip
round, before its ``done`` marker spreads, is exported twice (at-least-once, with a window of
about ``gossip.interval_ms``); so is one an operator removes while it is in fact still alive;
a node that crashes and restarts loses what it had buffered but not flushed; a sink buffer
that overflows drops its oldest points (counted). Graphite itself keeps one value per series
and timestamp, so a duplicate of a final value overwrites the same point with the same value.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from crdtstream.agent.aggregates import RESERVED_PREFIX
from crdtstream.agent.sinks import Point, Sink
from crdtstream.node import Node

__all__ = [
    "RESERVED_PREFIX",
    "ClusterExporter",
    "ExportCounters",
    "is_reserved",
    "points_of",
    "rendezvous_owner",
]

DONE_KEY = RESERVED_PREFIX + "export_done#node:{}"
FROM_KEY = RESERVED_PREFIX + "export_from#node:{}"
QUANTILES = (0.5, 0.9, 0.99)
_GONE = ("left", "removed")
"""Member states whose keys are re-owned: a dead verdict is only a guess (see the module)."""


def is_reserved(key: str) -> bool:
    """Whether ``key`` is one of the agent's own bookkeeping keys."""
    return key.startswith(RESERVED_PREFIX)


def rendezvous_owner(key: str, members: Sequence[str]) -> str:
    """The member with the highest hash of (member, key): stable when other members come
    or go, and the same on every node given the same members."""

    def weight(member: str) -> bytes:
        return hashlib.blake2b(f"{member}\0{key}".encode(), digest_size=8).digest()

    return max(members, key=weight)


def points_of(key: str, kind: str, value: object, start_ms: int) -> list[Point]:
    """The points of one key's window: one per number, a distribution as count, sum, min,
    max and quantiles (``name.count`` ...)."""
    name, _, tag_text = key.partition("#")
    tags = dict(tag.partition(":")[::2] for tag in tag_text.split(",")) if tag_text else {}
    stamp = start_ms // 1000
    if kind == "distribution":
        count = float(getattr(value, "count", 0.0))
        fields = {"count": count, "sum": float(getattr(value, "total", 0.0))}
        if count > 0:
            fields["min"] = float(getattr(value, "minimum", math.nan))
            fields["max"] = float(getattr(value, "maximum", math.nan))
            quantile = getattr(value, "quantile", None)
            if callable(quantile):
                for q in QUANTILES:
                    fields[f"p{round(q * 100)}"] = float(quantile(q))
        return [
            Point(f"{name}.{field_name}", tags, number, stamp, start_ms)
            for field_name, number in fields.items()
        ]
    sized = isinstance(value, frozenset | set)
    number = float(len(value)) if sized else float(value)  # type: ignore[arg-type]
    return [Point(name, tags, number, stamp, start_ms)]


@dataclass(slots=True)
class _Plan:
    """One final window as this node planned it."""

    eligible: tuple[str, ...]
    owners: dict[str, str]
    enqueued: set[str] = field(default_factory=set)


@dataclass(slots=True)
class ExportCounters:
    """Windows this node planned for export, and keys it took over from gone members."""

    windows_planned: int = 0
    keys_taken_over: int = 0


class ClusterExporter:
    """Decides which final windows this node exports and hands their points to a sink."""

    def __init__(self, node: Node, sink: Sink) -> None:
        self.node = node
        self.sink = sink
        self.node_id = node.config.node_id
        self.size_ms = node.config.window.size_ms
        self.first_window_ms: int | None = None
        self.done_through_ms: int | None = None
        self.plans: dict[int, _Plan] = {}
        self.counters = ExportCounters()

    # ------------------------------------------------------------------ markers

    def _marker(self, template: str, member: str) -> float | None:
        windows = self.node.engine.read(template.format(member)).result().windows
        values = [float(w.value) for w in windows]  # type: ignore[arg-type]
        return max(values) if values else None

    def _announce(self, now_ms: int) -> None:
        if self.first_window_ms is None:
            self.first_window_ms = now_ms - now_ms % self.size_ms
        # Written every round so that every window of this run holds them (see the module).
        self._record(FROM_KEY, float(self.first_window_ms))
        if self.done_through_ms is not None:
            self._record(DONE_KEY, float(self.done_through_ms))

    def _record(self, template: str, value: float) -> None:
        """Raise this node's marker ``template`` to ``value`` (a max register, gossiped)."""
        # Eventual under the default policy; a policy that makes it quorum or strong only delays
        # the marker, never exports twice, since the marker is read back from the store.
        self.node.engine.write(
            template.format(self.node_id),
            "observe",
            value,
            kind="max",
            now_ms=self.node.clock.now_ms(),
        )

    # ------------------------------------------------------------------ planning

    def _statuses(self) -> dict[str, str]:
        members = self.node.engine.gossip.membership.members
        return {node_id: member.status for node_id, member in members.items()}

    def _plan(self, start_ms: int, statuses: Mapping[str, str]) -> _Plan:
        eligible = []
        for member, status in sorted(statuses.items()):
            first = self._marker(FROM_KEY, member)
            if status not in _GONE and first is not None and first <= start_ms:
                eligible.append(member)
        values = self.node.engine.store.read_window(start_ms).values
        keys = [key for key in values if not is_reserved(key)]
        owners = {key: rendezvous_owner(key, eligible) for key in keys} if eligible else {}
        return _Plan(tuple(eligible), owners)

    def _take_over(self, start_ms: int, plan: _Plan, statuses: Mapping[str, str]) -> None:
        """Re-own the keys of members that died before exporting this window."""
        gone = set()
        for member in set(plan.owners.values()) - {self.node_id}:
            done = self._marker(DONE_KEY, member)
            if statuses.get(member) in _GONE and (done is None or done < start_ms):
                gone.add(member)
        if not gone:
            return
        survivors = [m for m in plan.eligible if statuses.get(m) not in _GONE]
        if not survivors:
            return
        for key, owner in plan.owners.items():
            if owner in gone:
                plan.owners[key] = rendezvous_owner(key, survivors)
                if plan.owners[key] == self.node_id:
                    self.counters.keys_taken_over += 1

    def collect(self, now_ms: int) -> int:
        """Plan newly final windows, re-own dead owners' keys, and enqueue this node's share.
        Returns the number of points enqueued."""
        self._announce(now_ms)
        statuses = self._statuses()
        retained = [s for s in self.node.engine.store.window_starts() if s % self.size_ms == 0]
        for start in retained:
            if start in self.plans:
                continue
            if not self.node.engine.gossip.is_final(start, start + self.size_ms):
                break
            self.plans[start] = self._plan(start, statuses)
            self.counters.windows_planned += 1
        enqueued = 0
        for start, plan in sorted(self.plans.items()):
            self._take_over(start, plan, statuses)
            mine = [k for k, o in plan.owners.items() if o == self.node_id]
            todo = [key for key in mine if key not in plan.enqueued]
            if todo:
                enqueued += self._enqueue(start, todo)
                plan.enqueued.update(todo)
        kept = set(retained)
        for start in [s for s in self.plans if s not in kept]:
            del self.plans[start]
        return enqueued

    def _enqueue(self, start_ms: int, keys: Sequence[str]) -> int:
        values = self.node.engine.store.read_window(start_ms).values
        points = []
        for key in keys:
            kind = self.node.engine.store.kind_of(key)
            if kind is not None and key in values:
                points += points_of(key, kind, values[key], start_ms)
        self.sink.enqueue(points)
        return len(points)

    def all_counters(self) -> dict[str, int]:
        """The exporter's and its sink's counts, for ``/metrics``."""
        stats = getattr(self.sink, "stats", None)
        sink = stats.as_dict() if stats is not None else {}
        return asdict(self.counters) | sink

    async def flush(self) -> bool:
        """Flush the sink; once it holds nothing older, advance this node's ``done`` marker."""
        sent = await self.sink.flush()
        oldest = self.sink.oldest_pending_window_ms()
        newest = max(self.plans, default=None)
        through = newest if oldest is None else oldest - self.size_ms
        if through is not None and (self.done_through_ms is None or through > self.done_through_ms):
            self.done_through_ms = through
            self._record(DONE_KEY, float(through))
        return sent
