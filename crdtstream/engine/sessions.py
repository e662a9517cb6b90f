"""The client session of one node's strong writes: a fresh id per run and a sequence number
per command. Idempotency keys travel inside the command and are remembered by the replicated
state machine, so a retry is recognised at any node, after any restart or leader change."""

from __future__ import annotations

import random

from crdtstream.errors import InvalidValueError
from crdtstream.raft.commands import request_digest
from crdtstream.raft.state_machine import Command

__all__ = ["ClientSession"]


class ClientSession:
    """Commands of one node's run, numbered in one Raft client session."""

    def __init__(self, replica: str, rng: random.Random) -> None:
        # A fresh client id per run: sequences restart at 1, and a resumed replica id must not
        # make the state machine take new commands for retries of the last run's.
        self.client_id = f"{replica}/{rng.getrandbits(32):08x}"
        self._sequence = 0

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

        With ``idempotency_key`` the command carries the key and a digest of the request as the
        client gave it: the replicated state machine applies at most one command per key,
        whichever node a retry is sent to, and answers a retry with the first result; the same
        key with another request gets an error result (see :mod:`crdtstream.raft.state_machine`).
        A command the state machine could not take is an :class:`InvalidValueError`.
        """
        digest = ""
        if idempotency_key is not None:
            digest = request_digest(key, kind, operation, value, limit, timestamp_ms)
        return self._next(key, kind, operation, value, stamp, limit, idempotency_key or "", digest)

    def claim_command(
        self,
        key: str,
        kind: str,
        operation: str,
        value: str,
        stamp: int,
        idempotency_key: str,
        digest: str,
    ) -> Command:
        """A ``claim`` or ``settle`` command in this session for a quorum write's
        ``idempotency_key`` and the write's request ``digest`` (see
        :mod:`crdtstream.raft.state_machine`)."""
        return self._next(key, kind, operation, value, stamp, None, idempotency_key, digest)

    def _next(
        self,
        key: str,
        kind: str,
        operation: str,
        value: float | int | str,
        stamp: int,
        limit: float | int | None,
        idempotency_key: str,
        digest: str,
    ) -> Command:
        """The session's next command; one the state machine could not take is an
        :class:`InvalidValueError` (and uses no sequence number)."""
        try:
            command = Command(
                self.client_id,
                self._sequence + 1,
                key,
                kind,
                operation,
                value,
                stamp,
                limit,
                idempotency_key,
                digest,
            )
        except (TypeError, ValueError) as error:
            raise InvalidValueError(str(error)) from error
        self._sequence += 1
        return command
