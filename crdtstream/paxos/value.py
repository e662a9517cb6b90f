"""A key's value under Paxos and the change functions applied to it.

The value of a key is a one-key :class:`~crdtstream.raft.state_machine.StateMachine`, as its
snapshot bytes: the same windows, the same commands (add, conditional_add with a limit, set,
observe...), the same refusals of late and malformed commands, and the same exactly-once rules
(client sessions and idempotency keys) as a strong key under Raft. What differs is scope:

* the watermark that decides lateness is the key's own (under Raft it is the newest event time
  applied to any strong key);
* the session and idempotency tables are the key's own, and bounded tighter
  (:data:`SESSIONS_MAX`, :data:`IDEMPOTENCY_KEYS_MAX`), since the whole value travels in every
  ACCEPT; an idempotency key reused on *another* key is therefore not detected.

A change applies a batch of commands in order to the value with the highest ballot among the
promises (CASPaxos's ``f(state)``); a read is the identity change, written back in full.
"""

from __future__ import annotations

from collections.abc import Sequence

from crdtstream.config import WindowConfig
from crdtstream.raft.commands import Command, Result, encode_command
from crdtstream.raft.state_machine import KeyView, StateMachine

__all__ = ["IDEMPOTENCY_KEYS_MAX", "SESSIONS_MAX", "apply_batch", "machine_of", "read_view"]

SESSIONS_MAX = 1_024
"""Client sessions remembered per key (a node has one session per run)."""

IDEMPOTENCY_KEYS_MAX = 1_024
"""Idempotency keys remembered per key (the oldest go first)."""


def machine_of(window: WindowConfig, value: bytes) -> StateMachine:
    """The one-key state machine a value holds (an empty one for ``b""``)."""
    machine = StateMachine(
        window, sessions_max=SESSIONS_MAX, idempotency_keys_max=IDEMPOTENCY_KEYS_MAX
    )
    if value:
        machine.restore(value)
    return machine


def apply_batch(
    window: WindowConfig, key: str, value: bytes, commands: Sequence[Command | None]
) -> tuple[bytes, list[Result | KeyView | None]]:
    """The value of ``key`` after ``commands`` in order (``None`` is a read of the value at that
    point), and one answer per command: its :class:`Result`, or the read's view."""
    machine = machine_of(window, value)
    answers: list[Result | KeyView | None] = []
    changed = False
    for command in commands:
        if command is None:
            answers.append(machine.read(key))
        else:
            answers.append(machine.apply(encode_command(command)))
            changed = True
    return (machine.snapshot() if changed else value), answers


def read_view(window: WindowConfig, key: str, value: bytes) -> KeyView | None:
    """The windows of ``key`` in ``value``, as a strong read answers them."""
    return machine_of(window, value).read(key) if value else None
