"""What the engine hands back for a write or a read: a :class:`Ticket` that completes once with
one :class:`Answer`, whatever the key's mode, or fails with a typed error.

A ticket is data, completed by the engine while it handles input (a write to an eventual key
completes before :meth:`~crdtstream.engine.Engine.write` returns, or, when the driver logs
writes, once it called :meth:`~crdtstream.engine.Engine.logged`; a quorum or strong one when
the answers arrive or its deadline passes). Whoever waits attaches a callback with
:meth:`Ticket.on_done`: the asyncio driver resolves a future there, a simulation records it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from crdtstream.config import Mode
from crdtstream.window.results import WindowValue

__all__ = ["Answer", "Ticket"]


class Answer(NamedTuple):
    """The result of one write or read, the same type for every mode.

    ``mode`` is the key's mode under the policy; ``consistency`` the guarantee this answer was
    served with (a read may ask for a weaker one). ``kind`` is None for a key never written.
    A read fills ``windows`` (oldest first; ``final`` says whether a value can still change).
    A write fills the fields of its mode: ``accepted`` (events applied on this node: 0 for a
    late event or a refused conditional add), ``removed`` for a set removal, and for a strong
    write ``applied`` (whether the replicated state machine applied it: False for a conditional
    add over its limit) and ``value`` (the key's value in the newest window it touched).

    A named tuple rather than a frozen dataclass: one is built per request, and a tuple is
    built in a fraction of the time.
    """

    key: str
    kind: str | None
    mode: Mode
    consistency: Mode
    windows: tuple[WindowValue, ...] = ()
    accepted: int = 0
    removed: bool | None = None
    applied: bool | None = None
    value: object = None


Callback = Callable[["Ticket"], None]


class Ticket:
    """One request in flight: completes once, with an :class:`Answer` or an error."""

    __slots__ = ("_answer", "_callbacks", "_error", "done")

    def __init__(self) -> None:
        self.done = False
        self._answer: Answer | None = None
        self._error: Exception | None = None
        self._callbacks: list[Callback] = []

    def on_done(self, callback: Callback) -> None:
        """Call ``callback(ticket)`` once the ticket completes (at once if it has)."""
        if self.done:
            callback(self)
        else:
            self._callbacks.append(callback)

    def result(self) -> Answer:
        """The answer; raises the error the request failed with, or :class:`RuntimeError`
        while the request is still in flight."""
        if not self.done:
            raise RuntimeError("the request is still in flight")
        if self._error is not None:
            raise self._error
        assert self._answer is not None
        return self._answer

    @property
    def error(self) -> Exception | None:
        """The error the request failed with, None while in flight or on success."""
        return self._error

    def complete(self, answer: Answer) -> None:
        """Complete with ``answer`` (a second completion is ignored: the first one stands)."""
        if not self.done:
            self._answer = answer
            self._finish()

    def fail(self, error: Exception) -> None:
        """Fail with ``error`` (ignored once completed)."""
        if not self.done:
            self._error = error
            self._finish()

    def _finish(self) -> None:
        self.done = True
        if not self._callbacks:  # a write answered at once: nobody waits yet
            return
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)
