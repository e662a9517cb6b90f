"""What anti-entropy and finality need from a delta-state lattice: the consumer's interface.

The windowed store (``crdtstream.window``) satisfies these protocols; so does the small
reference lattice in :mod:`crdtstream.gossip.reference` that simulations and the benchmark use.
Anti-entropy never looks inside a delta: it joins delta-groups, asks whether one is empty,
encodes it, and splits it to fit a message.

Contract of a :class:`DeltaGroup` (Almeida, Shoker, Baquero, "Delta State Replicated Data
Types", §3):

- ``join`` is commutative, associative and idempotent, and does **not** mutate its operands
  (anti-entropy keeps buffered groups and joins them into intervals many times).
- ``split(max_bytes)`` returns parts whose join equals the group, each of which encodes to at
  most ``max_bytes`` and can be merged on its own, in any order. Per-window version counts
  travel after the data they count (a part never certifies data of a later part); anti-entropy
  merges the parts of one transfer in order, so a window never looks complete too early.

Contract of a :class:`DeltaLattice`:

- ``version`` grows with every change, local or merged.
- ``delta_since(v)`` holds (at least) every cell changed after version ``v``.
- ``merge(d)`` joins ``d`` in place and returns the part of ``d`` that strictly inflated the
  local state (empty when nothing was new) — redundancy removal forwards only that part.
- ``window_versions(start_ms)`` maps replica id to the number of writes that replica made to the
  window starting at ``start_ms``, as far as this lattice has merged them (merged by max).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

__all__ = ["DecodeDelta", "DeltaGroup", "DeltaLattice"]

DeltaT = TypeVar("DeltaT", bound="DeltaGroup")


class DeltaGroup(Protocol):
    """A delta or a join of deltas: a mergeable piece of state."""

    def is_empty(self) -> bool:
        """True when the group carries no cell at all."""
        ...

    def join(self: DeltaT, other: DeltaT) -> DeltaT:
        """The least upper bound of both groups, as a new group."""
        ...

    def to_bytes(self) -> bytes:
        """The group encoded through :mod:`crdtstream.wire`."""
        ...

    def split(self: DeltaT, max_bytes: int) -> list[DeltaT]:
        """Independently mergeable parts that each encode to at most ``max_bytes``."""
        ...


class DeltaLattice(Protocol[DeltaT]):
    """Replicated state that hands out delta-groups and merges them."""

    @property
    def version(self) -> int:
        """A counter bumped by every change."""
        ...

    def delta_since(self, version: int) -> DeltaT:
        """Every cell changed after ``version``."""
        ...

    def full_state(self) -> DeltaT:
        """The whole state as one delta-group."""
        ...

    def merge(self, delta: DeltaT) -> DeltaT:
        """Join ``delta`` in place; return the part of it that inflated the state."""
        ...

    @property
    def watermark_ms(self) -> int | None:
        """Newest time seen minus the allowed lateness (None before any): a window ending at
        or before it is closed here and accepts no more writes."""
        ...

    def window_versions(self, start_ms: int) -> dict[str, int]:
        """Per replica id, the writes merged into the window starting at ``start_ms``."""
        ...

    def window_starts(self) -> list[int]:
        """Start times of the windows the lattice currently retains, oldest first."""
        ...


DecodeDelta = Callable[[bytes], DeltaT]
"""Turns :meth:`DeltaGroup.to_bytes` output back into a group; raises ``DecodeError``."""
