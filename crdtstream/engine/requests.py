"""What strong-mode requests share between a voter and a client: completions, retries, the
per-session window, and the batched wire rows of ``STRONG_REQUEST`` / ``STRONG_RESPONSE``.

Per client session, a write waits (queued, its deadline running) while it is
``session_results_max`` or more sequences ahead of the oldest unfinished write of its session:
the state machine keeps only that many results per session and would refuse, after commit, a
write overtaken by that many newer ones (a lost one retried late, say).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crdtstream import wire
from crdtstream.errors import UnavailableError
from crdtstream.raft.commands import result_body, result_from
from crdtstream.raft.state_machine import KeyView, Result, StateMachine

__all__ = [
    "FRAME_BYTES_MAX",
    "RETRY_TICKS",
    "SESSION_RESULTS_MAX",
    "Completion",
    "ReadAnswer",
    "Request",
    "Send",
    "Session",
    "SessionWindows",
    "answers_from",
    "both",
    "forwarded_from",
    "frames",
    "response_from",
    "response_row",
    "rows_from",
]

ReadAnswer = KeyView | None
"""A linearizable read: the key's windows, or None for a key never written."""

Completion = Callable[[Result | ReadAnswer | None, Exception | None], None]
"""Called once per request: ``(answer, None)`` on success, ``(None, error)`` on failure."""

Send = Callable[[str, bytes], None]

Session = tuple[str, int]
"""A write's ``(client_id, sequence)``."""

RETRY_TICKS = 5
"""A request not answered after this many ticks is sent again (same session, so idempotent)."""

SESSION_RESULTS_MAX = StateMachine().session_results_max
"""Results per session that a voter's state machine keeps (its default, which nodes use)."""

FRAME_BYTES_MAX = 256 * 1024
"""Batched requests or answers are split into frames of at most about this size, well under
the transport's payload limit."""


@dataclass(slots=True)
class Request:
    """One outstanding request: a write (``data`` is the command) or a read (``key``)."""

    data: bytes | None
    key: str | None
    deadline_tick: int
    retry_tick: int
    done: Completion
    read_index: int | None = None
    session: Session | None = None
    held: bool = False
    """A write waiting for older writes of its session to finish before it is sent."""


def both(first: Completion, second: Completion) -> Completion:
    def both(answer: Result | ReadAnswer | None, error: Exception | None) -> None:
        first(answer, error)
        second(answer, error)

    return both


class SessionWindows:
    """The unfinished writes of each client session, and which of them are held back.

    A write may be sent while its sequence is less than the oldest unfinished sequence of its
    session plus ``size``; the others wait until enough older ones finish (answered or
    expired), which always happens by their deadlines.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._open: dict[str, set[int]] = {}
        self._oldest: dict[str, list[int]] = {}  # a heap over _open, pruned when read
        self._held: dict[str, list[int]] = {}  # a heap of held sequences, pruned the same way

    def admit(self, session: Session) -> bool:
        """Open a write; True when it may be sent now, False when it is held."""
        client, sequence = session
        self._open.setdefault(client, set()).add(sequence)
        heapq.heappush(self._oldest.setdefault(client, []), sequence)
        if sequence < self._oldest_open(client) + self.size:
            return True
        heapq.heappush(self._held.setdefault(client, []), sequence)
        return False

    def finish(self, session: Session) -> list[Session]:
        """Close a write; returns the held writes that may be sent now."""
        client, sequence = session
        sequences = self._open.get(client)
        if sequences is None or sequence not in sequences:
            return []
        sequences.discard(sequence)
        if not sequences:
            for table in (self._open, self._oldest, self._held):
                table.pop(client, None)
            return []
        limit = self._oldest_open(client) + self.size
        held = self._held.get(client, [])
        released = []
        while held and held[0] < limit:
            candidate = heapq.heappop(held)
            if candidate in sequences:
                released.append((client, candidate))
        return released

    def _oldest_open(self, client: str) -> int:
        heap, sequences = self._oldest[client], self._open[client]
        while heap[0] not in sequences:
            heapq.heappop(heap)
        return heap[0]


def rows_from(body: Any) -> list[Any]:
    if not isinstance(body, list):
        raise TypeError("a batch of strong requests is an array")
    return body


def forwarded_from(body: Any) -> tuple[int, bytes | None, str | None, int]:
    request_id, data, key, timeout_ticks = body
    if type(request_id) is not int or type(timeout_ticks) is not int or timeout_ticks < 1:
        raise ValueError("malformed forwarded request")
    if (data is None) == (key is None):
        raise ValueError("a forwarded request carries a command or a key")
    if data is not None and not isinstance(data, bytes):
        raise TypeError("command must be bytes")
    if key is not None and not isinstance(key, str):
        raise TypeError("key must be a string")
    return request_id, data, key, timeout_ticks


def response_row(
    request_id: int, answer: Result | ReadAnswer | None, error: Exception | None
) -> list[Any]:
    if error is not None:
        return [request_id, "error", str(error)]
    if isinstance(answer, Result):
        return [request_id, "result", result_body(answer)]
    if answer is None:
        return [request_id, "read", None]
    return [request_id, "read", [answer.kind, [list(w) for w in answer.windows]]]


def answers_from(body: Any) -> tuple[str | None, list[Any]]:
    leader, rows = body
    if leader is not None and not isinstance(leader, str):
        raise TypeError("the leader of a strong response is a node id or nil")
    return leader, rows_from(rows)


def response_from(body: Any) -> tuple[int, Result | ReadAnswer | None, Exception | None]:
    request_id, kind, payload = body
    if type(request_id) is not int:
        raise ValueError("malformed response id")
    if kind == "error":
        return request_id, None, UnavailableError(str(payload))
    if kind == "result":
        return request_id, result_from(payload), None
    if kind == "read":
        if payload is None:
            return request_id, None, None
        view_kind, windows = payload
        if type(view_kind) is not str or not isinstance(windows, list):
            raise TypeError("a read answer is [kind, [[start_ms, end_ms, value], ...]]")
        checked = []
        for window in windows:
            if not (isinstance(window, list) and len(window) == 3):
                raise TypeError("a read answer's window is [start_ms, end_ms, value]")
            start_ms, end_ms, value = window
            if type(start_ms) is not int or type(end_ms) is not int:
                raise TypeError("a read answer's window bounds are integers")
            checked.append((start_ms, end_ms, value))
        return request_id, KeyView(view_kind, tuple(checked)), None
    raise ValueError(f"unknown response kind {kind!r}")


def frames(tag: wire.Tag, rows: list[Any], wrap: Callable[[list[Any]], Any]) -> list[bytes]:
    """``rows`` in frames of ``tag`` (body ``wrap(rows)``), halved until each fits
    :data:`FRAME_BYTES_MAX` (a single row goes alone whatever its size)."""
    frame = wire.encode(tag, wrap(rows))
    if len(frame) <= FRAME_BYTES_MAX or len(rows) == 1:
        return [frame]
    middle = len(rows) // 2
    return frames(tag, rows[:middle], wrap) + frames(tag, rows[middle:], wrap)
