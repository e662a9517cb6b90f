"""The client session of one node's strong writes: a fresh id per run, a sequence number per
command, and the idempotency keys of recent writes, so a retry is the very same command."""

from __future__ import annotations

import random
from collections import OrderedDict

from crdtstream.errors import InvalidValueError
from crdtstream.raft.state_machine import Command

__all__ = ["IDEMPOTENCY_KEYS_MAX", "ClientSession"]

IDEMPOTENCY_KEYS_MAX = 4_096
"""Idempotency keys of strong writes a session remembers (the oldest forgotten first). A retry
is deduplicated by the state machine only while its sequence is among the session's last
``session_results_max``; an older one is refused there, never applied twice."""


class ClientSession:
    """Commands of one node's run, numbered in one Raft client session."""

    def __init__(self, replica: str, rng: random.Random) -> None:
        # A fresh client id per run: sequences restart at 1, and a resumed replica id must not
        # make the state machine take new commands for retries of the last run's.
        self.client_id = f"{replica}/{rng.getrandbits(32):08x}"
        self._sequence = 0
        self._idempotent: OrderedDict[str, tuple[tuple[object, ...], Command]] = OrderedDict()

    def command(
        self,
        key: str,
        kind: str,
        operation: str,
        value: float | int | str,
        limit: float | int | None,
        stamp: int,
        timestamp_ms: int | None,
        idempotency_key: str | None,
    ) -> Command:
        """A command in this session (a fresh sequence number), stamped ``stamp``.

        With ``idempotency_key``, the very command made earlier for that key when there is one:
        a retry of a write that got no answer sends the same session and sequence, so the state
        machine applies it at most once and returns its first result. The last
        :data:`IDEMPOTENCY_KEYS_MAX` keys are remembered; a key reused for another request is
        an :class:`InvalidValueError`, as is a command the state machine could not take.
        """
        request = (key, kind, operation, value, limit, timestamp_ms)
        if idempotency_key is not None:
            known = self._idempotent.get(idempotency_key)
            if known is not None:
                if known[0] != request:
                    raise InvalidValueError(
                        f"idempotency key {idempotency_key!r} was used for another request"
                    )
                self._idempotent.move_to_end(idempotency_key)
                return known[1]
        try:
            command = Command(
                self.client_id, self._sequence + 1, key, kind, operation, value, stamp, limit
            )
        except (TypeError, ValueError) as error:
            raise InvalidValueError(str(error)) from error
        self._sequence += 1
        if idempotency_key is not None:
            self._idempotent[idempotency_key] = (request, command)
            if len(self._idempotent) > IDEMPOTENCY_KEYS_MAX:
                self._idempotent.popitem(last=False)
        return command
