"""The clients of the Raft simulation: Jepsen-style processes that record a history.

Each client runs one operation at a time against a node it picks at random, the way a real
client reaches any server: adds and conditional adds become commands with the client's session
(client id, sequence); reads go through ReadIndex. Invocations and completions are recorded on
the simulation's clock. A write not answered in time is retried with the same sequence on
another node (the state machine applies it at most once); after the last attempt it stays open in
the history, its effect unknown. A read not answered is dropped: it had no effect.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from crdtstream.errors import NotLeaderError
from crdtstream.raft.commands import request_digest
from crdtstream.raft.state_machine import Command, Result, decode_command, encode_command
from tests.checkers.linearizability import HistoryRecorder, Operation

if TYPE_CHECKING:
    from sim import SimNode, Simulation

TIMESTAMP_MS = 0
"""Every command lands in one window, so a key behaves as a single counter."""


@dataclass
class Client:
    """One Jepsen-style process: a single operation in flight at a time."""

    number: int
    rng: random.Random
    remaining: int
    next_action_ms: int = 0
    sequence: int = 0
    handle: int | None = None
    operation: Operation | None = None
    command: bytes = b""
    attempts: int = 0
    deadline_ms: int = 0
    read_context: bytes = b""

    @property
    def client_id(self) -> str:
        return f"client-{self.number}"

    @property
    def uses_idempotency_keys(self) -> bool:
        return self.number % 2 == 1

    def attempt_session(self) -> str:
        """The session an attempt is made in: a fresh one per attempt with idempotency keys."""
        if self.uses_idempotency_keys:
            return f"{self.client_id}/attempt-{self.attempts}"
        return self.client_id


class Workload:
    """Every client of a run, the history they record and the writes acknowledged to them."""

    def __init__(self, simulation: Simulation, rng: random.Random) -> None:
        self.sim = simulation
        options = simulation.options
        self.clients = [
            Client(index, random.Random(rng.random()), options.operations_per_client)
            for index in range(options.clients)
        ]
        self.recorder = HistoryRecorder()
        self.acknowledged: list[Operation] = []

    def busy(self) -> bool:
        """Whether some client still has an operation in flight or to come."""
        return any(client.handle is not None or client.remaining > 0 for client in self.clients)

    def act(self) -> None:
        """Let every client invoke, retry or give up, as its time has come."""
        for client in self.clients:
            self._act(client)

    def answer_write(self, node: SimNode, data: bytes, result: Result) -> None:
        command = decode_command(data)
        client = node.writes.pop((command.client_id, command.sequence), None)
        if client is None or client.handle is None or client.sequence != command.sequence:
            return
        assert client.operation is not None
        if not result.ok:
            self.sim.violations.append(f"write refused: {command} -> {result}")
            return
        value = result.applied if client.operation.kind == "conditional_add" else None
        self._complete(client, value)

    def serve_reads(self, node: SimNode) -> None:
        assert node.machine is not None
        still_waiting = []
        for index, context in node.confirmed_reads:
            if index > node.machine.applied_index:
                still_waiting.append((index, context))
                continue
            client = node.reads.pop(context, None)
            if client is not None and client.read_context == context:
                assert client.operation is not None
                value = node.machine.value(client.operation.key, TIMESTAMP_MS)
                self._complete(client, 0 if value is None else value)
        node.confirmed_reads = still_waiting

    def _complete(self, client: Client, result: int | bool | None) -> None:
        assert client.handle is not None
        assert client.operation is not None
        self.recorder.complete(client.handle, self.sim.now_ms, result)
        if client.operation.kind != "read":
            self.acknowledged.append(client.operation)
        client.handle = client.operation = None
        client.read_context = b""
        client.next_action_ms = self.sim.now_ms + client.rng.randint(0, 60)

    def _act(self, client: Client) -> None:
        if client.handle is not None:
            if self.sim.now_ms >= client.deadline_ms:
                self._retry_or_give_up(client)
            return
        if client.remaining <= 0 or self.sim.now_ms < client.next_action_ms:
            return
        client.remaining -= 1
        self._invoke(client, self._choose_operation(client))

    def _choose_operation(self, client: Client) -> Operation:
        rng = client.rng
        key = rng.choice(self.sim.options.keys)
        kind = rng.choice(["add", "add", "conditional_add", "read", "read"])
        if kind == "read":
            return Operation(client.number, key, "read", self.sim.now_ms, None)
        limit = self.sim.options.limit if kind == "conditional_add" else None
        return Operation(client.number, key, kind, self.sim.now_ms, None, rng.randint(1, 3), limit)

    def _invoke(self, client: Client, operation: Operation) -> None:
        client.operation = operation
        client.handle = self.recorder.invoke(operation)
        client.attempts = 0
        if operation.kind != "read":
            client.sequence += 1
        self._attempt(client)

    def _command(self, client: Client) -> bytes:
        operation = client.operation
        assert operation is not None
        key = digest = ""
        if client.uses_idempotency_keys:
            key = f"{client.client_id}:{client.sequence}"
            digest = request_digest(
                operation.key,
                "counter",
                operation.kind,
                operation.amount,
                operation.limit,
                TIMESTAMP_MS,
            )
        command = Command(
            client.attempt_session(),
            client.sequence,
            operation.key,
            "counter",
            operation.kind,
            operation.amount,
            TIMESTAMP_MS,
            operation.limit,
            key,
            digest,
        )
        return encode_command(command)

    def _attempt(self, client: Client) -> None:
        assert client.operation is not None
        client.attempts += 1
        client.deadline_ms = self.sim.now_ms + self.sim.options.attempt_timeout_ms
        node = self.sim.nodes[client.rng.choice(self.sim.ids)]
        if node.raw is None:
            return  # connection refused: the deadline will bring a retry
        if client.operation.kind == "read":
            client.read_context = f"{client.client_id}:{client.handle}:{client.attempts}".encode()
            node.reads[client.read_context] = client
            node.dirty = True
            node.raw.read_index(client.read_context)
            return
        client.command = self._command(client)
        node.writes[(client.attempt_session(), client.sequence)] = client
        node.dirty = True
        with contextlib.suppress(NotLeaderError):  # not taken: the deadline brings a retry
            node.raw.propose(client.command)

    def _retry_or_give_up(self, client: Client) -> None:
        assert client.handle is not None
        assert client.operation is not None
        if client.attempts < self.sim.options.attempts_max:
            self._attempt(client)
            return
        if client.operation.kind == "read":
            self.recorder.fail(client.handle)  # a read has no effect: leave it out
        # a write stays open in the recorder: it may or may not have taken effect
        client.handle = client.operation = None
        client.read_context = b""
        client.next_action_ms = self.sim.now_ms

    def final_reads(self) -> None:
        """One linearizable read per key, joining the history; retried until answered."""
        reader = self.clients[0]
        end_ms = self.sim.now_ms + 3_000
        for key in self.sim.options.keys:
            self._invoke(reader, Operation(0, key, "read", self.sim.now_ms, None))
            while reader.handle is not None and self.sim.now_ms < end_ms:
                reader.attempts = 1  # a final read retries until answered
                self.sim.advance_to_next_event(end_ms)
                self.sim.round()
            if reader.handle is not None:
                self.sim.violations.append(f"the final read of {key} was never answered")
                self.recorder.fail(reader.handle)
                reader.handle = reader.operation = None
