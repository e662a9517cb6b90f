"""Strong operations for a node outside the Raft voter set.

The client forwards each request to a voter (``STRONG_REQUEST``), which runs it as its own and
answers (``STRONG_RESPONSE``); everything of one pump goes in one frame, answers name the
voter's known leader so later requests go straight there, and unanswered requests are retried
at another voter until their deadline. Sessions make every retry safe.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from crdtstream import wire
from crdtstream.engine.requests import (
    RETRY_TICKS,
    SESSION_RESULTS_MAX,
    Completion,
    ReadAnswer,
    Request,
    Send,
    Session,
    SessionWindows,
    answers_from,
    frames,
    response_from,
)
from crdtstream.errors import DecodeError, UnavailableError
from crdtstream.raft.state_machine import Command, Result, encode_command

__all__ = ["StrongClient", "StrongClientCounters"]


@dataclass(slots=True)
class StrongClientCounters:
    """Strong requests a non-voter forwarded (beside its voters in ``raft`` status)."""

    answered: int = 0
    failed: int = 0
    malformed: int = 0


class StrongClient:
    """Strong operations for a node outside the voter set: forwarded to voters, retried."""

    def __init__(
        self,
        voters: Sequence[str],
        rng: random.Random,
        send: Send,
        session_results_max: int = SESSION_RESULTS_MAX,
    ) -> None:
        if not voters:
            raise ValueError("a strong client needs at least one voter")
        self.voters = list(voters)
        self._rng = rng
        self._send = send
        self._tick = 0
        # Ids start at a random point each run: an answer still in flight for the previous run
        # of this node must not complete a new request that happens to reuse its id.
        self._next_id = rng.getrandbits(62)
        self._requests: dict[int, tuple[Request, int]] = {}
        self._unsent: list[int] = []
        self._leader: str | None = None
        self._windows = SessionWindows(session_results_max)
        self._held: dict[Session, int] = {}
        self.counters = StrongClientCounters()

    def submit(self, command: Command, timeout_ticks: int, done: Completion) -> None:
        """Forward a write to a voter (held back while too far ahead of its session)."""
        request = Request(encode_command(command), None, 0, 0, done)
        request.session = (command.client_id, command.sequence)
        request_id = self._start(request, timeout_ticks)
        if self._windows.admit(request.session):
            self._forward(request_id)
        else:
            request.held = True
            self._held[request.session] = request_id

    def read(self, key: str, timeout_ticks: int, done: Completion) -> None:
        """Forward a linearizable read to a voter."""
        request = Request(None, key, 0, 0, done)
        self._forward(self._start(request, timeout_ticks))

    def _start(self, request: Request, timeout_ticks: int) -> int:
        request.deadline_tick = self._tick + timeout_ticks
        request_id = self._next_id
        self._next_id += 1
        self._requests[request_id] = (request, timeout_ticks)
        return request_id

    def _forward(self, request_id: int) -> None:
        """Send at the end of this pump, with every other request of the pump."""
        self._requests[request_id][0].retry_tick = self._tick + RETRY_TICKS * 2
        self._unsent.append(request_id)

    def _finish(
        self, request_id: int, answer: Result | ReadAnswer | None, error: Exception | None
    ) -> None:
        request, _ = self._requests.pop(request_id)
        if request.session is not None:
            self._held.pop(request.session, None)
            for released in self._windows.finish(request.session):
                waiting_id = self._held.pop(released, None)
                if waiting_id is not None and waiting_id in self._requests:
                    self._requests[waiting_id][0].held = False
                    self._forward(waiting_id)
        if error is None:
            self.counters.answered += 1
        else:
            self.counters.failed += 1
        request.done(answer, error)

    def tick(self) -> None:
        """Retry unanswered requests at another voter; fail those past their deadline."""
        self._tick += 1
        for request_id, (request, _) in list(self._requests.items()):
            if self._tick >= request.deadline_tick:
                self._finish(
                    request_id, None, UnavailableError("strong request timed out at every voter")
                )
            elif not request.held and self._tick >= request.retry_tick:
                self._leader = None  # no answer: the leader we knew may be gone
                self._forward(request_id)

    def step(self, source: str, payload: bytes) -> None:
        """Handle a voter's answers; learn the leader it names."""
        try:
            leader, rows = wire.decode_as(payload, wire.Tag.STRONG_RESPONSE, answers_from)
        except DecodeError:
            self.counters.malformed += 1
            return
        if leader in self.voters:
            self._leader = leader
        elif source == self._leader:
            self._leader = None  # our leader no longer knows one
        for row in rows:
            try:
                request_id, answer, error = wire.build_checked(row, response_from)
            except DecodeError:
                self.counters.malformed += 1
                continue
            entry = self._requests.get(request_id)
            if entry is None:
                continue  # answered already (a retry's duplicate)
            is_write = entry[0].data is not None
            if error is None and is_write != isinstance(answer, Result):
                self.counters.malformed += 1  # an answer of the wrong kind for this id
                continue
            if error is not None and self._tick < entry[0].deadline_tick:
                self._forward(request_id)  # that voter gave up early: try another
                continue
            self._finish(request_id, answer, error)

    def fail_all(self, error: Exception) -> None:
        """Fail every outstanding request with ``error`` (the node is shutting down)."""
        for request_id in list(self._requests):
            if request_id in self._requests:
                self._finish(request_id, None, error)

    def process_ready(self) -> None:
        """Send this pump's requests in one frame, to the leader when it is known."""
        if not self._unsent:
            return
        unsent, self._unsent = self._unsent, []
        rows = []
        for request_id in dict.fromkeys(unsent):  # a retry may repeat an id within a pump
            entry = self._requests.get(request_id)
            if entry is None:
                continue
            request, timeout_ticks = entry
            remaining = max(1, request.deadline_tick - self._tick)
            rows.append([request_id, request.data, request.key, min(timeout_ticks, remaining)])
        if not rows:
            return
        voter = self._leader
        if voter is None:
            voter = self.voters[self._rng.randrange(len(self.voters))]
        for frame in frames(wire.Tag.STRONG_REQUEST, rows, lambda part: part):
            self._send(voter, frame)
