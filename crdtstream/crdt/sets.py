"""Sets: :class:`GSet` (grow-only) and :class:`ORSet` (add-wins observed-remove).

:class:`ORSet` is the optimised add-wins set of Almeida, Shoker and Baquero ("Delta state
replicated data types", 2018, the ``AWORSet`` over a dot kernel). Every add creates a *dot*
``(replica, n)``; the state is the live dots per item plus a causal context: every dot ever seen,
kept compactly as a version vector plus a *dot cloud* of the dots that are not yet contiguous.
A remove keeps no tombstone: it only drops the item's dots, which stay remembered in the causal
context, so a concurrent add (a dot the remover never saw) wins. Once deltas have arrived in any
order the cloud folds back into the version vector, so the context does not grow with removes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Self

from crdtstream import wire
from crdtstream.crdt.base import (
    Crdt,
    Item,
    expect_int,
    expect_list,
    expect_str,
    item_order,
    validate_item,
    validate_replica,
)

__all__ = ["GSet", "ORSet"]

Dot = tuple[str, int]


class GSet(Crdt):
    """A grow-only set of ``str``/``bytes``/``int`` items; merge is union."""

    TAG = wire.Tag.G_SET
    __slots__ = ("_items", "replica")

    def __init__(self, replica: str) -> None:
        self.replica = validate_replica(replica)
        self._items: set[Item] = set()

    def add(self, item: Item) -> GSet:
        """Add ``item``; returns the delta (a set holding just ``item``)."""
        validate_item(item)
        self._items.add(item)
        delta = GSet(self.replica)
        delta._items.add(item)
        return delta

    def merge(self, other: Self) -> None:
        """Union."""
        self._check_mergeable(other)
        self._items |= other._items

    @property
    def value(self) -> frozenset[Item]:
        """The items."""
        return frozenset(self._items)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Item]:
        return iter(frozenset(self._items))

    def copy(self) -> Self:
        """An independent copy."""
        gset = type(self)(self.replica)
        gset._items = set(self._items)
        return gset

    def _state(self) -> Any:
        return self._items

    def _body(self) -> Any:
        return sorted(self._items, key=item_order)

    @classmethod
    def _from_body(cls, replica: str, body: Any) -> Self:
        gset = cls(replica)
        gset._items = {validate_item(item) for item in expect_list(body)}
        return gset


class _CausalContext:
    """Every dot seen: a version vector (contiguous prefix per replica) plus a dot cloud."""

    __slots__ = ("cloud", "versions")

    def __init__(self) -> None:
        self.versions: dict[str, int] = {}
        self.cloud: set[Dot] = set()

    def __contains__(self, dot: Dot) -> bool:
        replica, counter = dot
        return counter <= self.versions.get(replica, 0) or dot in self.cloud

    def next_dot(self, replica: str) -> Dot:
        """The next unused dot of ``replica`` (its own dots are normally all in the vector)."""
        in_cloud = [counter for name, counter in self.cloud if name == replica]
        return (replica, max([self.versions.get(replica, 0), *in_cloud]) + 1)

    def add(self, dot: Dot) -> None:
        if dot not in self:
            self.cloud.add(dot)

    def join(self, other: _CausalContext) -> None:
        for replica, counter in other.versions.items():
            if counter > self.versions.get(replica, 0):
                self.versions[replica] = counter
        self.cloud |= other.cloud
        self.compact()

    def compact(self) -> None:
        """Fold cloud dots that extend the version vector into it, and drop covered ones."""
        for replica, counter in sorted(self.cloud):
            current = self.versions.get(replica, 0)
            if counter == current + 1:
                self.versions[replica] = counter
        self.cloud = {dot for dot in self.cloud if dot[1] > self.versions.get(dot[0], 0)}

    def copy(self) -> _CausalContext:
        context = _CausalContext()
        context.versions = dict(self.versions)
        context.cloud = set(self.cloud)
        return context


class ORSet(Crdt):
    """An add-wins observed-remove set of ``str``/``bytes``/``int`` items.

    Deltas of :meth:`remove` only carry the removed dots, so a replica that merges deltas should
    receive them in causal order per origin for intermediate reads to be exact; the join itself
    converges in any order.
    """

    TAG = wire.Tag.OR_SET
    __slots__ = ("_context", "_dot_items", "_entries", "replica")

    def __init__(self, replica: str) -> None:
        self.replica = validate_replica(replica)
        self._entries: dict[Item, set[Dot]] = {}
        # Index of every live dot to its item, so that merging a small delta touches only the
        # items it names instead of scanning the whole set.
        self._dot_items: dict[Dot, Item] = {}
        self._context = _CausalContext()

    def _replace_dots(self, item: Item, dots: set[Dot]) -> None:
        for old in self._entries.pop(item, ()):
            del self._dot_items[old]
        if dots:
            self._entries[item] = dots
            for dot in dots:
                self._dot_items[dot] = item

    def add(self, item: Item) -> ORSet:
        """Add ``item`` under a fresh dot that supersedes the item's observed dots."""
        validate_item(item)
        dot = self._context.next_dot(self.replica)
        delta = ORSet(self.replica)
        delta._context.cloud = set(self._entries.get(item, ()))
        delta._context.cloud.add(dot)
        delta._context.compact()
        delta._entries[item] = {dot}
        self._replace_dots(item, {dot})
        self._context.add(dot)
        self._context.compact()
        return delta

    def remove(self, item: Item) -> ORSet:
        """Remove ``item`` as observed here; a concurrent add elsewhere wins."""
        validate_item(item)
        delta = ORSet(self.replica)
        delta._context.cloud = set(self._entries.get(item, ()))
        delta._context.compact()
        self._replace_dots(item, set())
        return delta

    def merge(self, other: Self) -> None:
        """Keep a dot if both sides have it, or one side has it and the other never saw it."""
        self._check_mergeable(other)
        for item in self._items_touched_by(other):
            mine = self._entries.get(item, set())
            theirs = other._entries.get(item, set())
            if mine == theirs:
                continue
            kept = (
                (mine & theirs)
                | {dot for dot in mine - theirs if dot not in other._context}
                | {dot for dot in theirs - mine if dot not in self._context}
            )
            if kept != mine:
                self._replace_dots(item, kept)
        self._context.join(other._context)

    def _items_touched_by(self, other: ORSet) -> set[Item]:
        """Items whose dots ``other`` can change: those it holds, and ours whose dots it saw."""
        touched = set(other._entries)
        versions = other._context.versions
        if sum(versions.values()) > len(self._dot_items):
            touched |= self._entries.keys()
        else:
            for replica, counter in versions.items():
                for number in range(1, counter + 1):
                    item = self._dot_items.get((replica, number))
                    if item is not None:
                        touched.add(item)
        for dot in other._context.cloud:
            item = self._dot_items.get(dot)
            if item is not None:
                touched.add(item)
        return touched

    @property
    def value(self) -> frozenset[Item]:
        """The items present."""
        return frozenset(self._entries)

    def __contains__(self, item: object) -> bool:
        return item in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Item]:
        return iter(frozenset(self._entries))

    def copy(self) -> Self:
        """An independent copy."""
        orset = type(self)(self.replica)
        orset._entries = {item: set(dots) for item, dots in self._entries.items()}
        orset._dot_items = dict(self._dot_items)
        orset._context = self._context.copy()
        return orset

    def _state(self) -> Any:
        return (self._entries, self._context.versions, self._context.cloud)

    def _body(self) -> Any:
        return [
            dict(sorted(self._context.versions.items())),
            [list(dot) for dot in sorted(self._context.cloud)],
            [
                [item, [list(dot) for dot in sorted(self._entries[item])]]
                for item in sorted(self._entries, key=item_order)
            ],
        ]

    @classmethod
    def _from_body(cls, replica: str, body: Any) -> Self:
        versions, cloud, entries = expect_list(body, 3)
        orset = cls(replica)
        if not isinstance(versions, dict):
            raise TypeError("version vector must be a map")
        orset._context.versions = {
            expect_str(name): expect_int(counter, 1) for name, counter in versions.items()
        }
        orset._context.cloud = {_dot(dot) for dot in expect_list(cloud)}
        orset._context.compact()
        for entry in expect_list(entries):
            item, dots = expect_list(entry, 2)
            live = {_dot(dot) for dot in expect_list(dots)}
            if not live or any(dot not in orset._context for dot in live):
                raise ValueError("every live dot must be non-empty and in the causal context")
            if item in orset._entries or any(dot in orset._dot_items for dot in live):
                raise ValueError("an item or a dot appears twice")
            orset._replace_dots(validate_item(item), live)
        return orset


def _dot(body: Any) -> Dot:
    replica, counter = expect_list(body, 2)
    return (expect_str(replica), expect_int(counter, 1))
