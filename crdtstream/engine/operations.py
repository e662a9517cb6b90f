"""The write operations (one verb each, whatever the mode) and the pure rules the engine routes
by: which kind a write gives a key, which reads a mode serves, what a strong read answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from crdtstream.config import MODES, Mode
from crdtstream.engine.requests import ReadAnswer
from crdtstream.engine.tickets import Answer
from crdtstream.errors import InvalidValueError, KindConflictError, RefusedError
from crdtstream.window.results import IngestResult, WindowValue

__all__ = [
    "OPERATIONS",
    "Operation",
    "check_applied",
    "check_local",
    "kind_for",
    "operation_named",
    "served_consistency",
    "strong_answer",
]


@dataclass(frozen=True, slots=True)
class Operation:
    """One write operation: the kind a new key gets from it, the kinds it applies to, and its
    name in the replicated state machine. ``strong_only``: only Raft can serve it."""

    new_kind: str
    kinds: tuple[str, ...]
    replicated_name: str
    strong_only: bool = False


OPERATIONS: Final[dict[str, Operation]] = {
    "add": Operation("counter", ("counter",), "add"),
    "set": Operation("gauge", ("gauge",), "set"),
    "observe": Operation("distribution", ("distribution", "max", "min"), "observe"),
    "insert": Operation("set", ("set", "distinct"), "add"),
    "remove": Operation("set", ("set",), "remove"),
    "conditional_add": Operation("counter", ("counter",), "conditional_add", strong_only=True),
}
"""Every write operation, one verb each, whatever the key's mode."""


def kind_for(key: str, op: str, operation: Operation, kind: str | None, known: str | None) -> str:
    """The kind ``op`` writes to ``key``: the one it has (``known``), else the ``kind`` asked
    for, else the operation's default; a mismatch is a :class:`KindConflictError`."""
    if kind is not None and kind not in operation.kinds:
        raise InvalidValueError(f"{op!r} applies to {list(operation.kinds)}, not to {kind!r}")
    if known is not None and known != (kind or known):
        raise KindConflictError(f"key {key!r} is a {known}, not a {kind}")
    chosen = known or kind or operation.new_kind
    if chosen not in operation.kinds:
        raise KindConflictError(
            f"key {key!r} is a {chosen}; {op!r} applies to {list(operation.kinds)}"
        )
    return chosen


def served_consistency(key: str, mode: Mode, consistency: str | None) -> Mode:
    """The consistency a read of a ``mode`` key is served with: ``consistency`` when the mode
    allows it (weaker, or a quorum read of an eventual key), else a typed error."""
    if consistency is None:
        return mode
    if consistency not in MODES:
        raise InvalidValueError(
            f"unknown consistency {consistency!r}; expected one of {list(MODES)}"
        )
    served: Mode = consistency
    if mode == "strong" and served == "quorum":
        raise RefusedError(f"{key!r} is strong: it serves strong or eventual reads")
    if mode != "strong" and served == "strong":
        raise RefusedError(f"{key!r} is {mode}: a strong read serves strong keys only")
    if served == "bounded":
        raise RefusedError(f"{key!r} is {mode}: a bounded read serves bounded keys only")
    return served


def operation_named(op: str) -> Operation:
    """The :class:`Operation` called ``op``, or :class:`InvalidValueError`."""
    operation = OPERATIONS.get(op) if isinstance(op, str) else None
    if operation is None:
        raise InvalidValueError(f"unknown op {op!r}; expected one of {sorted(OPERATIONS)}")
    return operation


def check_local(
    key: str, mode: Mode, op: str, operation: Operation, limit: float | int | None
) -> None:
    """Refuse what an eventual or quorum key cannot serve."""
    if operation.strong_only:
        raise RefusedError(
            f"{op} needs a strong key (only Raft can hold a limit across nodes); {key!r} is {mode}"
        )
    if limit is not None:
        raise InvalidValueError("limit applies to conditional_add only")


def check_applied(result: IngestResult, key: str, kind: str, value: object) -> None:
    """Raise the typed error of a write the store refused (another kind, an invalid value)."""
    if result.rejected:
        raise KindConflictError(f"key {key!r} already has another kind")
    if result.invalid:
        raise InvalidValueError(f"invalid value {value!r} for a {kind}")


def strong_answer(key: str, view: ReadAnswer, served: Mode) -> Answer:
    """A read of the replicated state machine as an :class:`Answer`. Its windows are never
    reported final: they may take writes until the replicated watermark passes them."""
    if view is None:
        return Answer(key, None, "strong", served)
    windows = tuple(WindowValue(start, end, value, False) for start, end, value in view.windows)
    return Answer(key, view.kind, "strong", served, windows=windows)
