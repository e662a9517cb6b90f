"""The ``set`` kind: an exact add-wins observed-remove set per (key, slice).

Each add creates a dot ``(replica, n)``; the causal context records every dot seen, as a version
vector plus a cloud of dots beyond it (compacted into the vector when contiguous), so a remove
leaves no tombstone: the removed item's dots simply stay in the context and no longer in
``entries``. Join keeps a dot that both sides hold, or that one side holds and the other has not
seen. A cell is shipped whole when it changes (it spans every replica).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Dot", "Item", "OrSetCell"]

Item = str | bytes
Dot = tuple[str, int]


@dataclass(slots=True)
class OrSetCell:
    """Add-wins set state: item -> dots, plus the causal context."""

    entries: dict[Item, frozenset[Dot]] = field(default_factory=dict)
    context: dict[str, int] = field(default_factory=dict)
    cloud: set[Dot] = field(default_factory=set)
    changed_version: int = field(default=0, compare=False)

    def _seen(self, dot: Dot) -> bool:
        return dot[1] <= self.context.get(dot[0], 0) or dot in self.cloud

    def _compact(self) -> None:
        for dot in sorted(self.cloud):
            replica, counter = dot
            if counter == self.context.get(replica, 0) + 1:
                self.context[replica] = counter
                self.cloud.discard(dot)
            elif counter <= self.context.get(replica, 0):
                self.cloud.discard(dot)

    def add(self, replica: str, item: Item) -> None:
        """Add ``item`` with a fresh dot of ``replica`` (replacing the dots it observed)."""
        counter = self.context.get(replica, 0) + 1
        self.context[replica] = counter
        self.entries[item] = frozenset({(replica, counter)})

    def remove(self, item: Item) -> bool:
        """Remove ``item`` (its observed dots stay in the context); True when it was present."""
        return self.entries.pop(item, None) is not None

    def copy(self) -> OrSetCell:
        """An independent copy (the dot sets are immutable and shared)."""
        return OrSetCell(
            dict(self.entries), dict(self.context), set(self.cloud), self.changed_version
        )

    def joined(self, other: OrSetCell) -> OrSetCell:
        """The join of two states (a new cell; neither input changes)."""
        result = OrSetCell(context=dict(self.context), cloud=set(self.cloud))
        for replica, counter in other.context.items():
            result.context[replica] = max(counter, result.context.get(replica, 0))
        result.cloud |= other.cloud
        for item in self.entries.keys() | other.entries.keys():
            mine = self.entries.get(item, frozenset())
            theirs = other.entries.get(item, frozenset())
            kept = (mine & theirs) | {d for d in mine - theirs if not other._seen(d)}
            kept |= {d for d in theirs - mine if not self._seen(d)}
            if kept:
                result.entries[item] = frozenset(kept)
        result._compact()
        return result

    @property
    def value(self) -> frozenset[Item]:
        """The items present."""
        return frozenset(self.entries)

    def to_wire(self) -> list[Any]:
        """The cell as msgpack-able values."""
        return [
            [[item, [list(d) for d in sorted(dots)]] for item, dots in self.entries.items()],
            self.context,
            [list(d) for d in sorted(self.cloud)],
        ]

    @classmethod
    def from_wire(cls, body: Any) -> OrSetCell:
        """Rebuild a cell from :meth:`to_wire`; ValueError/TypeError on a bad shape."""
        entries_body, context_body, cloud_body = body
        context = {_replica(r): _counter(c) for r, c in dict(context_body).items()}
        cloud = {_dot(d) for d in cloud_body}
        entries: dict[Item, frozenset[Dot]] = {}
        for item, dots in entries_body:
            if not isinstance(item, str | bytes):
                raise TypeError("set items must be str or bytes")
            entries[item] = frozenset(_dot(d) for d in dots)
            if not entries[item]:
                raise ValueError("a set item needs at least one dot")
        cell = cls(entries, context, cloud)
        if any(not cell._seen(d) for dots in entries.values() for d in dots):
            raise ValueError("a set dot lies outside the causal context")
        return cell


def _replica(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("a replica id must be a string")
    return value


def _counter(value: Any) -> int:
    if not isinstance(value, int) or value < 1:
        raise ValueError("a dot counter must be a positive int")
    return value


def _dot(value: Any) -> Dot:
    replica, counter = value
    return _replica(replica), _counter(counter)
