"""A linearizability checker: Wing & Gong search with Lowe's memoisation, partitioned by key.

This follows Porcupine (anishathalye/porcupine ``checker.go``): the history becomes a doubly
linked list of call and return entries sorted by time (calls before returns on ties, so intervals
are closed); the search walks it, tries to linearize each call it meets, lifts linearized operations
out of the list, and backtracks when it reaches the return of an operation it could not place. A
cache of (linearized set, model state) pairs already explored keeps the search from repeating
itself. A history is linearizable iff each key's sub-history is (P-compositionality), so keys are
checked one at a time.

An operation that timed out has no completion: it may or may not have taken effect. Its return
is placed at infinity and its result is unknown (``None``), which every model step accepts.
Operations that definitely failed must be left out of the history by the recorder.
"""

from __future__ import annotations

import enum
import math
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

__all__ = [
    "CounterModel",
    "HistoryRecorder",
    "KeyVerdict",
    "Operation",
    "Verdict",
    "check_history",
    "check_operations",
]

StateT = TypeVar("StateT", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation: what was asked, what came back, and when.

    ``kind`` is ``"add"``, ``"conditional_add"`` or ``"read"``. ``result`` is the read value, the
    conditional add's ``applied`` flag, or ``None`` when unknown. ``complete_time`` is ``None``
    when the operation timed out; it then counts as completing at infinity.
    """

    client_id: int
    key: str
    kind: str
    invoke_time: float
    complete_time: float | None
    amount: int = 0
    limit: int | None = None
    result: int | bool | None = None

    @property
    def end_time(self) -> float:
        """The completion time, or infinity for an operation that never completed."""
        return math.inf if self.complete_time is None else self.complete_time

    def describe(self) -> str:
        """A one-line human description, used in verdicts."""
        arguments = f"{self.amount}" + ("" if self.limit is None else f", limit={self.limit}")
        call = "read()" if self.kind == "read" else f"{self.kind}({arguments})"
        return (
            f"client {self.client_id} {self.key}: {call} -> {self.result!r} "
            f"[{self.invoke_time}, {self.end_time}]"
        )


class Model(Protocol[StateT]):
    """A sequential specification: an initial state and a pure step function."""

    def initial_state(self) -> StateT:
        """The state before any operation."""
        ...

    def step(self, state: StateT, operation: Operation) -> tuple[bool, StateT]:
        """Whether ``operation`` and its recorded result are legal in ``state``; the next state."""
        ...


class CounterModel:
    """An integer counter with ``add(n)``, ``conditional_add(n, limit)`` and ``read()``.

    A conditional add applies only when the result stays ``<= limit``; its recorded result says
    whether it applied. An unknown result (``None``) is consistent with whatever the state implies.
    """

    def initial_state(self) -> int:
        """Counters start at zero."""
        return 0

    def step(self, state: int, operation: Operation) -> tuple[bool, int]:
        """Apply one operation to the counter value ``state``."""
        if operation.kind == "add":
            return True, state + operation.amount
        if operation.kind == "conditional_add":
            if operation.limit is None:
                raise ValueError(f"conditional_add without a limit: {operation.describe()}")
            applies = state + operation.amount <= operation.limit
            legal = operation.result is None or operation.result is applies
            return legal, state + operation.amount if applies else state
        if operation.kind == "read":
            return operation.result is None or operation.result == state, state
        raise ValueError(f"unknown operation kind {operation.kind!r}")


class Verdict(enum.Enum):
    """The outcome of a check; ``UNKNOWN`` when the search budget ran out."""

    LINEARIZABLE = "linearizable"
    ILLEGAL = "illegal"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class KeyVerdict:
    """The verdict for one key, with a witness order or the furthest point the search reached."""

    key: str
    verdict: Verdict
    order: tuple[Operation, ...] = ()
    stuck_at: Operation | None = None
    states_explored: int = 0

    def explain(self) -> str:
        """A short explanation for assertion messages."""
        if self.verdict is Verdict.LINEARIZABLE:
            return f"{self.key}: linearizable ({len(self.order)} operations)"
        where = "" if self.stuck_at is None else f"; no order places {self.stuck_at.describe()}"
        prefix = " -> ".join(operation.describe() for operation in self.order[-5:])
        return f"{self.key}: {self.verdict.value}{where}; longest prefix ends: {prefix}"


@dataclass(slots=True)
class _Entry:
    """A node of the call/return list; ``match`` links a call to its return."""

    operation_index: int
    is_call: bool
    previous: _Entry | None = None
    next: _Entry | None = None
    match: _Entry | None = field(default=None, repr=False)


def _build_list(operations: Sequence[Operation]) -> _Entry:
    """Sort calls and returns by time (calls first on ties) into a list headed by a sentinel."""
    events: list[tuple[float, int, int]] = []
    for index, operation in enumerate(operations):
        if operation.end_time < operation.invoke_time:
            raise ValueError(f"completes before it was invoked: {operation.describe()}")
        events.append((operation.invoke_time, 0, index))
        events.append((operation.end_time, 1, index))
    events.sort()
    head = _Entry(operation_index=-1, is_call=True)
    calls: dict[int, _Entry] = {}
    tail = head
    for _, kind, index in events:
        entry = _Entry(operation_index=index, is_call=kind == 0, previous=tail)
        if kind == 0:
            calls[index] = entry
        else:
            calls[index].match = entry
        tail.next = entry
        tail = entry
    return head


def _lift(call: _Entry) -> None:
    """Unlink a call and its return from the list."""
    for entry in (call, call.match):
        assert entry is not None
        assert entry.previous is not None
        entry.previous.next = entry.next
        if entry.next is not None:
            entry.next.previous = entry.previous


def _unlift(call: _Entry) -> None:
    """Relink a call and its return, in the reverse order of :func:`_lift`."""
    for entry in (call.match, call):
        assert entry is not None
        assert entry.previous is not None
        entry.previous.next = entry
        if entry.next is not None:
            entry.next.previous = entry


def check_operations(
    key: str,
    operations: Sequence[Operation],
    model: Model[StateT],
    *,
    max_states: int = 2_000_000,
) -> KeyVerdict:
    """Check one key's operations; give up with ``UNKNOWN`` after ``max_states`` cache entries."""
    head = _build_list(operations)
    state = model.initial_state()
    linearized = 0
    explored: set[tuple[int, StateT]] = set()
    stack: list[tuple[_Entry, StateT]] = []
    longest: list[Operation] = []
    stuck_at: Operation | None = None
    entry = head.next
    while head.next is not None:
        assert entry is not None
        if entry.is_call:
            operation = operations[entry.operation_index]
            legal, next_state = model.step(state, operation)
            bits = linearized | (1 << entry.operation_index)
            if legal and (bits, next_state) not in explored:
                if len(explored) >= max_states:
                    return KeyVerdict(key, Verdict.UNKNOWN, tuple(longest), None, len(explored))
                explored.add((bits, next_state))
                stack.append((entry, state))
                state, linearized = next_state, bits
                _lift(entry)
                if len(stack) > len(longest):
                    longest = [operations[call.operation_index] for call, _ in stack]
                entry = head.next
                continue
            entry = entry.next
            continue
        if not stack:
            stuck_at = stuck_at or operations[entry.operation_index]
            return KeyVerdict(key, Verdict.ILLEGAL, tuple(longest), stuck_at, len(explored))
        if len(stack) == len(longest):
            stuck_at = operations[entry.operation_index]
        call, state = stack.pop()
        linearized &= ~(1 << call.operation_index)
        _unlift(call)
        entry = call.next
    order = tuple(operations[call.operation_index] for call, _ in stack)
    return KeyVerdict(key, Verdict.LINEARIZABLE, order, None, len(explored))


def check_history(
    operations: Iterable[Operation],
    model: Model[StateT] | None = None,
    *,
    max_states_per_key: int = 2_000_000,
) -> list[KeyVerdict]:
    """Partition ``operations`` by key and check each part; one verdict per key, sorted by key."""
    chosen: Model[StateT] = model if model is not None else CounterModel()  # type: ignore[assignment]
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for operation in operations:
        by_key[operation.key].append(operation)
    return [
        check_operations(key, by_key[key], chosen, max_states=max_states_per_key)
        for key in sorted(by_key)
    ]


class HistoryRecorder:
    """Collects invocations and completions as a client driver sees them, on one clock."""

    def __init__(self) -> None:
        self._open: dict[int, Operation] = {}
        self._done: list[Operation] = []
        self._next_id = 0

    def invoke(self, operation: Operation) -> int:
        """Record an invocation (``complete_time`` and ``result`` ignored); returns a handle."""
        handle = self._next_id
        self._next_id += 1
        self._open[handle] = operation
        return handle

    def complete(self, handle: int, complete_time: float, result: int | bool | None) -> None:
        """Record that the operation completed with ``result``."""
        invoked = self._open.pop(handle)
        self._done.append(replace(invoked, complete_time=complete_time, result=result))

    def fail(self, handle: int) -> None:
        """Record that the operation definitely did not take effect: it leaves the history."""
        del self._open[handle]

    def history(self) -> list[Operation]:
        """Completed operations plus every still-open one as timed out (unknown result)."""
        pending = [replace(op, complete_time=None, result=None) for op in self._open.values()]
        return [*self._done, *pending]


def assert_counter_history(
    history: Sequence[Operation], final_values: Mapping[str, float | None]
) -> None:
    """The checks every real-process strong test makes of its counter history: linearizable,
    enough writes completed to mean anything, and each node's final value at least every
    acknowledged add and at most those plus the ones whose outcome is unknown."""
    verdicts = check_history(history)
    assert all(v.verdict is Verdict.LINEARIZABLE for v in verdicts), [v.explain() for v in verdicts]
    acknowledged = sum(
        op.amount
        for op in history
        if op.complete_time is not None
        and (op.kind == "add" or (op.kind == "conditional_add" and op.result is True))
    )
    unknown = sum(op.amount for op in history if op.complete_time is None and op.kind != "read")
    completed_writes = [op for op in history if op.complete_time is not None and op.kind != "read"]
    assert len(completed_writes) > 20, "too little load went through to mean anything"
    for node_id, value in final_values.items():
        assert value is not None, node_id
        assert acknowledged <= value <= acknowledged + unknown, (node_id, value, acknowledged)
