"""A bounded counter (escrow): a quota that every replica spends locally, within its rights.

After Balegas et al., *Putting Consistency Back into Eventual Consistency* / *Extending Eventually
Consistent Cloud Databases for Enforcing Numeric Invariants* (SRDS 2015) and Antidote's
``antidote_crdt_counter_b``. The state is a rights matrix of grow-only slots:

- ``grants[r]``: rights replica ``r`` created for itself (its initial allocation);
- ``transfers[(s, t)]``: rights replica ``s`` has moved to replica ``t`` in total;
- ``spent[r]``: rights replica ``r`` has consumed in total.

``rights(r) = grants[r] + Σ_s transfers[(s, r)] - Σ_t transfers[(r, t)] - spent[r]``.

Every slot is written only by the replica it belongs to (``grants[r]``, ``spent[r]`` and every
``transfers[(r, *)]`` by ``r``), and each holds a running total, so merge is a pointwise max:
a lost, duplicated or reordered delta never counts twice, and it can never create rights —
rights leave ``r`` only by ``r``'s own spend or transfer, which ``r`` makes only from rights it
knows it holds, and what ``r`` knows it received is never more than was sent to it. Hence
``Σ spent <= Σ grants`` under any interleaving of merges: the quota holds under any partition.

``value`` is the total spent (the quota's use); ``granted`` the total created (its limit).
"""

from __future__ import annotations

from typing import Any, Self

from crdtstream import wire
from crdtstream.crdt.base import Crdt, expect_int, expect_list, expect_str, validate_replica
from crdtstream.errors import RefusedError

__all__ = ["NO_RIGHTS", "BoundedCounter"]

NO_RIGHTS = "no_rights"
"""The reason of the :class:`RefusedError` a spend or transfer beyond this replica's rights
raises."""


def _join(into: dict[Any, int], other: dict[Any, int]) -> None:
    for slot, total in other.items():
        if total > into.get(slot, 0):
            into[slot] = total


def _amount(n: object, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{what} must be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"{what} must be >= 0, got {n}")
    return n


def _slots(body: Any) -> dict[str, int]:
    if not isinstance(body, dict):
        raise TypeError(f"expected a map of replica totals, got {type(body).__name__}")
    slots = {expect_str(replica): expect_int(total, 0) for replica, total in body.items()}
    return {replica: total for replica, total in slots.items() if total}


class BoundedCounter(Crdt):
    """Rights to a quota, spread over replicas: ``grant``, ``consume`` and ``transfer``.

    ``consume(n)`` and ``transfer(n, to)`` succeed only when this replica holds ``n`` rights
    (else :class:`RefusedError` with reason :data:`NO_RIGHTS`, and nothing changes); each
    mutator returns the delta (the slot it changed).
    """

    TAG = wire.Tag.BOUNDED_COUNTER
    __slots__ = ("_grants", "_spent", "_transfers", "replica")

    def __init__(self, replica: str) -> None:
        self.replica = validate_replica(replica)
        self._grants: dict[str, int] = {}
        self._spent: dict[str, int] = {}
        self._transfers: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------------ mutators

    def grant(self, n: int) -> BoundedCounter:
        """Create ``n >= 0`` rights for this replica (its allocation); returns the delta."""
        _amount(n, "a grant")
        return self._bump("_grants", self.replica, n)

    def consume(self, n: int) -> BoundedCounter:
        """Spend ``n >= 0`` of this replica's rights; returns the delta."""
        self._check_rights(_amount(n, "a consumption"))
        return self._bump("_spent", self.replica, n)

    def transfer(self, n: int, to: str) -> BoundedCounter:
        """Move ``n >= 0`` of this replica's rights to replica ``to``; returns the delta."""
        validate_replica(to)
        if to == self.replica:
            raise ValueError("a replica cannot transfer rights to itself")
        self._check_rights(_amount(n, "a transfer"))
        return self._bump("_transfers", (self.replica, to), n)

    def _check_rights(self, n: int) -> None:
        held = self.rights(self.replica)
        if n > held:
            raise RefusedError(f"{NO_RIGHTS}: {n} asked, {held} held by {self.replica!r}")

    def _bump(self, field: str, slot: Any, n: int) -> BoundedCounter:
        """Add ``n`` to ``slot`` of the map named ``field``; the delta holds the new total."""
        delta = BoundedCounter(self.replica)
        if n:
            total = getattr(self, field).get(slot, 0) + n
            getattr(self, field)[slot] = total
            getattr(delta, field)[slot] = total
        return delta

    def merge(self, other: Self) -> None:
        """Keep the larger total of every slot."""
        self._check_mergeable(other)
        _join(self._grants, other._grants)
        _join(self._spent, other._spent)
        _join(self._transfers, other._transfers)

    # ------------------------------------------------------------------ reads

    def rights(self, replica: str) -> int:
        """The rights ``replica`` holds, as far as this state knows (exact for its own)."""
        received = sent = 0
        for (source, target), total in self._transfers.items():
            if target == replica:
                received += total
            if source == replica:
                sent += total
        return self._grants.get(replica, 0) + received - sent - self._spent.get(replica, 0)

    def all_rights(self) -> dict[str, int]:
        """The rights of every replica this state knows of, by replica (zeros left out)."""
        replicas = set(self._grants) | set(self._spent)
        for source, target in self._transfers:
            replicas.update((source, target))
        held = {replica: self.rights(replica) for replica in sorted(replicas)}
        return {replica: n for replica, n in held.items() if n}

    def writers(self) -> list[str]:
        """Every replica with a slot of its own here (a grant, spending or a transfer out)."""
        writers = set(self._grants) | set(self._spent)
        writers.update(source for source, _ in self._transfers)
        return sorted(writers)

    def received_by(self, replica: str) -> int:
        """The rights moved to ``replica`` by others, as far as this state knows."""
        return sum(total for (_, target), total in self._transfers.items() if target == replica)

    def sent_by(self, replica: str) -> int:
        """The rights ``replica`` moved to others."""
        return sum(total for (source, _), total in self._transfers.items() if source == replica)

    def row(self, replica: str) -> BoundedCounter:
        """Only the slots ``replica`` writes (its grant, its spending, its transfers out): the
        state of its row, which a retirement freezes."""
        row = BoundedCounter(self.replica)
        if replica in self._grants:
            row._grants[replica] = self._grants[replica]
        if replica in self._spent:
            row._spent[replica] = self._spent[replica]
        row._transfers = {slot: n for slot, n in self._transfers.items() if slot[0] == replica}
        return row

    def as_replica(self, replica: str) -> BoundedCounter:
        """A copy that writes as ``replica`` (a node writing a second row it owns); merge it
        back to keep what it wrote."""
        counter = self.copy()
        counter.replica = validate_replica(replica)
        return counter

    def granted_by(self, replica: str) -> int:
        """The rights ``replica`` created for itself."""
        return self._grants.get(replica, 0)

    def spent_by(self, replica: str) -> int:
        """The rights ``replica`` spent."""
        return self._spent.get(replica, 0)

    @property
    def granted(self) -> int:
        """Every right ever created: the quota's limit once every allocation is known."""
        return sum(self._grants.values())

    @property
    def value(self) -> int:
        """The total spent: the quota's use."""
        return sum(self._spent.values())

    # ------------------------------------------------------------------ codec

    def copy(self) -> Self:
        """An independent copy."""
        counter = type(self)(self.replica)
        counter._grants = dict(self._grants)
        counter._spent = dict(self._spent)
        counter._transfers = dict(self._transfers)
        return counter

    def _state(self) -> Any:
        return (self._grants, self._spent, self._transfers)

    def _body(self) -> Any:
        transfers: dict[str, dict[str, int]] = {}
        for (source, target), total in sorted(self._transfers.items()):
            transfers.setdefault(source, {})[target] = total
        return [dict(sorted(self._grants.items())), dict(sorted(self._spent.items())), transfers]

    @classmethod
    def _from_body(cls, replica: str, body: Any) -> Self:
        grants, spent, transfers = expect_list(body, 3)
        counter = cls(replica)
        counter._grants = _slots(grants)
        counter._spent = _slots(spent)
        if not isinstance(transfers, dict):
            raise TypeError(f"expected a map of transfers, got {type(transfers).__name__}")
        for source, targets in transfers.items():
            validate_replica(source)
            for target, total in _slots(targets).items():
                validate_replica(target)
                if target == source:
                    raise ValueError(f"a transfer from {source!r} to itself")
                counter._transfers[(source, target)] = total
        return counter
