"""The driver's handle on one node of per-key CASPaxos: a proposer and an acceptor.

The loop a driver runs (the shape of :class:`~crdtstream.raft.rawnode.RawNode`)::

    node.tick()                               # every config.tick_ms
    node.step(message)                        # every message received
    operation_id = node.submit(key, command)  # or node.read(key)
    if node.has_ready():
        ready = node.ready()
        persist ready.records; fsync          # BEFORE anything below
        send ready.messages
        deliver ready.outcomes
        node.advance(ready)

Proposer (Rystsov 2018, §2.2). Per key, one round at a time carries every operation queued for
the key (a batch): PREPARE to every acceptor with a fresh ballot; on promises from a majority,
take the value with the highest accepted ballot, apply the batch to it (the change function),
ACCEPT the result with the same ballot; on accepts from a majority every operation of the
batch has taken effect, in batch order, and completes. A read is the identity change and runs
the same full round — never a read of promises alone, which is how Cassandra
(CASSANDRA-12126) and Scylla (scylladb#6299) returned values that a later read did not see.

One round trip when the same proposer changes a key again (§2.2.1): each ACCEPT also carries
the proposer's next ballot for the key, which an accepting acceptor promises in the same
record; after a successful round the proposer holds that promise from a majority and its next
round of the key starts at ACCEPT. Any conflict or timeout drops the held promise and the key
goes back to the two-round-trip path.

Contention: a REJECT names the highest ballot the acceptor saw; the proposer fast-forwards its
counter past it ("the proposer should fast-forward its counter", §2.2) and retries after a
jittered backoff scaled by the latency of its recent successful rounds (Cassandra's
``ContentionStrategy``: the wait is drawn from ``[p50 * 0.66, p95 * 1.8^attempts)`` ticks,
clamped). A round with no majority within ``round_timeout_ticks`` retries the same way. A retry
re-applies the same commands: their ``(client_id, sequence)`` sessions in the value make sure a
command that did take effect in an abandoned round is not applied twice.

An operation not done by its deadline fails: with an *unknown* outcome when it was ever sent in
an ACCEPT (it may still take effect, when a later round picks the value up), as "not applied"
otherwise.

A preferred proposer per key (the paper's §3, "a leader per key"; Paxos Made Simple's
distinguished proposer): the acceptors ranked by a rendezvous hash of ``(key, acceptor)``; the
first one not suspected is the key's proposer. Every node agrees on the ranking without a
message, keys spread over the acceptors, and the proposer of a key stays the same while it
answers, so it keeps the one-round-trip path and nobody duels it. A node asked to change or
read a key it does not lead sends the operation (its command with the command's session and
idempotency key) to that proposer as FORWARD; the proposer puts it in its next round of the
key and answers with FORWARDED. If no answer comes within a latency-scaled timeout (twice the
p95 of recent forwards' round trips, clamped) and that proposer has completed none of this
node's other forwards in the last half timeout (one that still does is slow, not gone: the
wait starts again), the forwarder suspects the proposer for ``suspect_ticks`` and sends every
operation it had forwarded there on to the next proposer of the key's ranking not suspected —
proposing it itself only when that is this node — and new ones too until the suspicion ends.
Every forwarder that waited on the cut-off proposer picks the same next one, so the survivors
keep one proposer per key instead of each proposing its own operations and duelling (REJECT,
backoff) until their suspicions agree. An operation is sent on at most once per other acceptor
(suspicions may end meanwhile); after that it is proposed here. Any message from the suspected
proposer ends the suspicion early (it is back: a partition healed, a restart), so two nodes do
not both propose for its keys for long. A proposer that is down therefore costs one timeout and
one hop, not liveness. Safety never rests on this: a forwarded command may end up in rounds of
several proposers, and its session in the value applies it at most once (the later answers are
the first one's result); a read is a full round wherever it runs. An answer counts only from
the proposer the operation waits on now. An operation received as FORWARD is proposed where it
arrives, never forwarded again.

Acceptors: a fixed set (the Raft voters), majority quorums. Membership changes are not
supported: changing the set needs the paper's procedure (§2.3: flexible quorums and an
identity sweep over every key), and replacing acceptors without it can lose every value.

Answers of the local acceptor to the local proposer are held until :meth:`advance`, like the
ones that leave, so no promise or accept counts before its record is durable.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from crdtstream.config import WindowConfig
from crdtstream.errors import ConfigError, DecodeError
from crdtstream.paxos.acceptor import Acceptor
from crdtstream.paxos.types import (
    ZERO_BALLOT,
    AcceptorRecord,
    Ballot,
    ForwardAnswer,
    Message,
    MessageType,
)
from crdtstream.paxos.value import apply_batch
from crdtstream.raft.commands import Command, Result
from crdtstream.raft.state_machine import KeyView

__all__ = ["Outcome", "PaxosConfig", "PaxosNode", "ProposerCounters", "Ready", "proposer_ranking"]

UNKNOWN_OUTCOME: Final = (
    "paxos {what} of {key!r} timed out without a majority; its outcome is unknown: it may "
    "still take effect (retry with the same idempotency key to learn it)"
)
NOT_APPLIED: Final = "paxos {what} of {key!r} timed out without a majority; it was not applied"


@dataclass(frozen=True, slots=True)
class PaxosConfig:
    """Timing in ticks (the driver maps one tick to ``tick_ms``) and batch limits."""

    tick_ms: int = 5
    round_timeout_ticks: int = 40
    """A round with no majority by then is retried with a higher ballot (lost messages)."""
    backoff_min_ticks: int = 2
    """Cassandra's lower clamp of the backoff ceiling (10 ms at 5 ms ticks)."""
    backoff_max_ticks: int = 20
    """Cassandra's upper clamp of the backoff ceiling (100 ms at 5 ms ticks)."""
    batch_operations_max: int = 256
    """Operations one round carries for one key."""
    one_round_trip: bool = True
    """Piggyback the next PREPARE on each ACCEPT, so the next change of a key by the same
    proposer needs one round trip (§2.2.1)."""
    prepared_keys_max: int = 10_000
    """Keys whose next ballot this proposer holds promised (the oldest are forgotten)."""
    forward: bool = True
    """Send an operation on a key this node does not lead to the key's preferred proposer."""
    forward_timeout_min_ticks: int = 10
    """The least wait for a forwarded operation's answer before proposing it here."""
    forward_timeout_max_ticks: int = 100
    """The most wait for that answer (also the wait before any forward was answered)."""
    suspect_ticks: int = 400
    """How long a proposer that left a forward unanswered is passed over."""

    def __post_init__(self) -> None:
        for name in (
            "tick_ms",
            "round_timeout_ticks",
            "backoff_min_ticks",
            "batch_operations_max",
            "forward_timeout_min_ticks",
            "suspect_ticks",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"paxos.{name} must be >= 1")
        if self.backoff_max_ticks < self.backoff_min_ticks:
            raise ValueError("paxos.backoff_max_ticks must be >= backoff_min_ticks")
        if self.forward_timeout_max_ticks < self.forward_timeout_min_ticks:
            raise ValueError("paxos.forward_timeout_max_ticks must be >= forward_timeout_min_ticks")


@dataclass(slots=True)
class ProposerCounters:
    """What this node's proposer did (read as a mapping through ``dataclasses.asdict``)."""

    rounds_started: int = 0
    rounds_succeeded: int = 0
    rounds_one_round_trip: int = 0
    rounds_conflicted: int = 0
    rounds_timed_out: int = 0
    operations_ok: int = 0
    """Operations completed by this node's rounds (its own and those forwarded to it)."""
    operations_failed: int = 0
    stale_messages: int = 0
    values_unreadable: int = 0
    operations_forwarded: int = 0
    """Operations sent to the key's preferred proposer."""
    forwards_answered: int = 0
    """Forwarded operations whose outcome came back."""
    forwards_served: int = 0
    """Operations other nodes forwarded here, proposed here."""
    forward_fallbacks: int = 0
    """Forwarded operations proposed here after their proposer did not answer in time."""
    proposers_suspected: int = 0
    """Times a preferred proposer was passed over for leaving a forward unanswered."""
    forwards_rerouted: int = 0
    """Forwarded operations sent on to the next proposer of their key's ranking after theirs
    did not answer in time."""


def proposer_ranking(key: str, acceptors: Sequence[str]) -> list[str]:
    """The acceptors in the order they lead ``key``: a rendezvous (highest random weight)
    hash, so every node ranks alike and removing one acceptor moves only its keys."""

    def weight(acceptor: str) -> bytes:
        data = f"{key}\x00{acceptor}".encode()
        return hashlib.blake2b(data, digest_size=8).digest()

    return sorted(acceptors, key=weight, reverse=True)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one operation ended: ``answer`` (a write's :class:`Result`, a read's view) when
    ``error`` is empty; otherwise ``error`` says why and ``unknown`` whether it may still take
    effect."""

    operation_id: int
    answer: Result | KeyView | None = None
    error: str = ""
    unknown: bool = False
    refused: bool = False
    """The key's value could not be read (it does not restore here): nothing was applied."""


@dataclass(frozen=True, slots=True)
class Ready:
    """Work for the driver, in this order: persist and sync ``records``; send ``messages``;
    deliver ``outcomes``; then :meth:`PaxosNode.advance`."""

    records: dict[str, AcceptorRecord]
    messages: tuple[Message, ...]
    outcomes: tuple[Outcome, ...]
    local_answers: tuple[Message, ...] = ()
    """The local acceptor's answers, stepped by :meth:`PaxosNode.advance` (not sent)."""


@dataclass(slots=True)
class _Operation:
    id: int
    key: str
    command: Command | None
    deadline_tick: int
    sent_in_accept: bool = False
    reply_to: tuple[str, int, Ballot] | None = None
    """A forwarded operation's forwarder, its operation id there and the ballot field of its
    FORWARD, echoed back (None: one of ours)."""
    forwarded_to: str = ""
    """The proposer this operation waits on ("" when proposed here)."""
    forwarded_tick: int = 0
    fallback_tick: int = 0
    """When, unanswered, its proposer is suspected and it goes to the next one."""
    reforwards: int = 0
    """Times it was sent on to the next proposer after the one it waited on did not answer."""

    @property
    def due_tick(self) -> int:
        """When a forwarded operation needs a look: its fallback or its deadline."""
        return min(self.fallback_tick, self.deadline_tick)


@dataclass(slots=True)
class _Round:
    key: str
    ballot: Ballot
    operations: list[_Operation]
    started_tick: int
    phase_tick: int
    accepting: bool = False
    promises: dict[str, tuple[Ballot, bytes]] = field(default_factory=dict)
    next_ballot: Ballot = ZERO_BALLOT
    """The ballot promised along with this round's ACCEPT (the one-round-trip path)."""
    value: bytes = b""
    """The value this round's ACCEPT carries."""
    accepted_by: set[str] = field(default_factory=set)
    answers: dict[int, Result | KeyView | None] = field(default_factory=dict)


_LATENCY_SAMPLES: Final = 64
"""Successful round durations kept for the backoff's percentiles (and forward round trips for
the forward timeout's)."""


class PaxosNode:
    """One node's proposer and acceptor; every method is a pure state transition."""

    def __init__(
        self,
        node_id: str,
        acceptors: Sequence[str],
        window: WindowConfig,
        rng: random.Random,
        config: PaxosConfig | None = None,
        records: Iterable[tuple[str, AcceptorRecord]] = (),
    ) -> None:
        """Start (or restart) with the durable acceptor ``records``; ``acceptors`` is the
        fixed acceptor set (it may leave this node out: it then only proposes)."""
        if not acceptors:
            raise ValueError("paxos needs at least one acceptor")
        self.node_id = node_id
        self.acceptors = tuple(sorted(set(acceptors)))
        self.majority = len(self.acceptors) // 2 + 1
        self.window = window
        self.rng = rng
        self.config = config or PaxosConfig()
        # A nonce per run: a restarted proposer counts from 1 again and must not resend a
        # ballot it used before the crash with another value.
        self.proposer_id = f"{node_id}#{rng.getrandbits(40):010x}"
        self.acceptor = Acceptor(node_id, records)
        self._counter = 0
        self._tick = 0
        self._next_operation_id = 1
        self._queues: dict[str, list[_Operation]] = {}
        self._rounds: dict[str, _Round] = {}
        self._attempts: dict[str, int] = {}
        self._retry_at_tick: dict[str, int] = {}
        # Key -> (ballot promised by a majority along with our last accept, the value they
        # accepted): the next round of the key skips PREPARE.
        self._prepared: dict[str, tuple[Ballot, bytes]] = {}
        self._latencies: deque[int] = deque(maxlen=_LATENCY_SAMPLES)
        self._forward_latencies: deque[int] = deque(maxlen=_LATENCY_SAMPLES)
        self._forward_timeout: int | None = None
        """:meth:`forward_timeout_ticks`, until the next sample."""
        self._forwarded: dict[int, _Operation] = {}
        """Our operations waiting on another proposer, by id."""
        self._forwards_due: list[tuple[int, int]] = []
        """A heap of ``(due tick, operation id)`` over :attr:`_forwarded`, so a tick looks only
        at the forwards that are due. Entries are deleted lazily: one whose operation was
        answered, or was given another due tick since, is skipped when it comes up."""
        self._suspected_until: dict[str, int] = {}
        self._answered_at: dict[str, int] = {}
        """When each proposer last answered a forward with a completed operation."""
        self._rankings: dict[str, list[str]] = {}
        """Each key's :func:`proposer_ranking` (dropped whole past ``prepared_keys_max``)."""
        self._messages: list[Message] = []
        self._local_answers: list[Message] = []
        self._outcomes: list[Outcome] = []
        self._outstanding: Ready | None = None
        self.counters = ProposerCounters()

    # -- inputs --

    def submit(self, key: str, command: Command, timeout_ticks: int) -> int:
        """Queue a write to ``key``; returns the id its :class:`Outcome` will carry."""
        if command.key != key:
            raise ValueError(f"the command names key {command.key!r}, not {key!r}")
        return self._queue(key, command, timeout_ticks)

    def read(self, key: str, timeout_ticks: int) -> int:
        """Queue a linearizable read of ``key`` (a full round of the identity change)."""
        return self._queue(key, None, timeout_ticks)

    def _queue(self, key: str, command: Command | None, timeout_ticks: int) -> int:
        operation = _Operation(self._next_operation_id, key, command, self._tick + timeout_ticks)
        self._next_operation_id += 1
        leader = self.proposer_of(key)
        if leader != self.node_id:
            self._forward(operation, leader)
        else:
            self._propose(operation)
        return operation.id

    def _propose(self, operation: _Operation) -> None:
        self._queues.setdefault(operation.key, []).append(operation)
        self._start_round(operation.key)

    # -- the preferred proposer --

    def proposer_of(self, key: str) -> str:
        """Who proposes for ``key`` from here: the first acceptor of its ranking that is this
        node or not suspected (this node when forwarding is off or it leads the key)."""
        if not self.config.forward:
            return self.node_id
        ranking = self._rankings.get(key)
        if ranking is None:
            if len(self._rankings) >= self.config.prepared_keys_max:
                self._rankings.clear()
            ranking = self._rankings[key] = proposer_ranking(key, self.acceptors)
        for acceptor in ranking:
            if acceptor == self.node_id or self._suspected_until.get(acceptor, 0) <= self._tick:
                return acceptor
        return self.node_id

    def forward_timeout_ticks(self) -> int:
        """The wait for a forwarded operation's answer: twice the p95 of recent forwards'
        round trips, clamped to the configured bounds (the upper one before any sample)."""
        if self._forward_timeout is None:
            config = self.config
            timeout = config.forward_timeout_max_ticks
            if self._forward_latencies:
                ordered = sorted(self._forward_latencies)
                p95 = ordered[((len(ordered) - 1) * 95) // 100]
                timeout = min(timeout, max(config.forward_timeout_min_ticks, 2 * p95))
            self._forward_timeout = timeout
        return self._forward_timeout

    def _forward(self, operation: _Operation, leader: str) -> None:
        self.counters.operations_forwarded += 1
        # Once sent, a write may take effect there whatever we hear back.
        operation.sent_in_accept = operation.command is not None
        self._send_forward(operation, leader)

    def _send_forward(self, operation: _Operation, leader: str) -> None:
        """Send ``operation`` to ``leader`` as FORWARD and wait a forward timeout for it."""
        operation.forwarded_to = leader
        operation.forwarded_tick = self._tick
        self._schedule_fallback(operation, self._tick + self.forward_timeout_ticks())
        self._forwarded[operation.id] = operation
        timeout = max(1, operation.deadline_tick - self._tick)
        self._messages.append(
            Message(
                MessageType.FORWARD,
                self.node_id,
                leader,
                operation.key,
                (0, self.proposer_id),  # echoed: an answer meant for an earlier run is stale
                operation=operation.id,
                timeout=timeout,
                command=operation.command,
            )
        )

    def _serve_forward(self, message: Message) -> None:
        """Propose an operation another node forwarded; its outcome goes back as FORWARDED."""
        command = message.command
        deadline = self._tick + max(1, message.timeout)
        operation = _Operation(self._next_operation_id, message.key, command, deadline)
        self._next_operation_id += 1
        operation.reply_to = (message.sender, message.operation, message.ballot)
        self.counters.forwards_served += 1
        self._propose(operation)

    def _forward_answered(self, message: Message) -> None:
        operation = self._forwarded.get(message.operation)
        if (
            operation is None  # answered after we proposed it ourselves
            or operation.forwarded_to != message.sender
            or message.ballot != (0, self.proposer_id)  # meant for this node's previous run
        ):
            self.counters.stale_messages += 1
            return
        del self._forwarded[message.operation]
        self._forward_latencies.append(self._tick - operation.forwarded_tick)
        self._forward_timeout = None
        self._suspected_until.pop(message.sender, None)
        self.counters.forwards_answered += 1
        answer = message.answer or ForwardAnswer()
        if not answer.error:
            self._answered_at[message.sender] = self._tick
        self._outcomes.append(
            Outcome(operation.id, answer.answer, answer.error, answer.unknown, answer.refused)
        )

    def _schedule_fallback(self, operation: _Operation, fallback_tick: int) -> None:
        operation.fallback_tick = fallback_tick
        heapq.heappush(self._forwards_due, (operation.due_tick, operation.id))

    def _suspect(self, leader: str) -> None:
        """``leader`` left a forward unanswered: pass it over for a while and send every
        operation still waiting on it to the key's next proposer (a scan, but once per
        suspicion, not per tick)."""
        self._suspected_until[leader] = self._tick + self.config.suspect_ticks
        self.counters.proposers_suspected += 1
        waiting = [o for o in self._forwarded.values() if o.forwarded_to == leader]
        queued_here = set()
        for operation in waiting:
            del self._forwarded[operation.id]
            if self._reroute(operation):
                queued_here.add(operation.key)
        # Started once all are queued, so the operations of a key go in one round together.
        for key in queued_here:
            self._start_round(key)

    def _reroute(self, operation: _Operation) -> bool:
        """Send an operation whose proposer did not answer to the first proposer of its key's
        ranking not suspected — the one every other forwarder of the key picks too, so the
        survivors do not duel — or queue it here (True) when that is this node, or when it has
        been sent on once per other acceptor already (the bound on its hops)."""
        leader = self.proposer_of(operation.key)
        if leader == self.node_id or operation.reforwards >= len(self.acceptors) - 1:
            operation.forwarded_to = ""
            self.counters.forward_fallbacks += 1
            self._queues.setdefault(operation.key, []).append(operation)
            return True
        operation.reforwards += 1
        self.counters.forwards_rerouted += 1
        self._send_forward(operation, leader)
        return False

    def _finish(self, operation: _Operation, outcome: Outcome) -> None:
        """Deliver ``outcome``: here, or back to the node that forwarded the operation."""
        if operation.reply_to is None:
            self._outcomes.append(outcome)
            return
        forwarder, forwarded_id, echo = operation.reply_to
        answer = ForwardAnswer(outcome.answer, outcome.error, outcome.unknown, outcome.refused)
        self._messages.append(
            Message(
                MessageType.FORWARDED,
                self.node_id,
                forwarder,
                operation.key,
                echo,
                operation=forwarded_id,
                answer=answer,
            )
        )

    def tick(self) -> None:
        """Advance logical time by one tick: fail expired operations, fall back from
        unanswered forwards, retry stuck rounds."""
        self._tick += 1
        self._expire()
        self._tick_forwards()
        for round_ in list(self._rounds.values()):
            if self._tick - round_.phase_tick >= self.config.round_timeout_ticks:
                self.counters.rounds_timed_out += 1
                self._abandon(round_)
        for key in [k for k, at in self._retry_at_tick.items() if at <= self._tick]:
            del self._retry_at_tick[key]
            self._start_round(key)

    def _tick_forwards(self) -> None:
        """Fail the forwarded operations past their deadline; suspect the proposers that
        left one unanswered past its fallback tick."""
        timeout = self.forward_timeout_ticks()
        due = self._forwards_due
        while due and due[0][0] <= self._tick:
            due_tick, operation_id = heapq.heappop(due)
            operation = self._forwarded.get(operation_id)
            if operation is None or operation.due_tick != due_tick:
                continue  # answered, proposed here, or due again later
            if operation.deadline_tick <= self._tick:
                del self._forwarded[operation.id]
                self._fail(operation)
                continue
            leader = operation.forwarded_to
            answered_at = self._answered_at.get(leader)
            if answered_at is not None and self._tick - answered_at <= timeout // 2:
                # Slow, not gone: it completes other forwards; wait another timeout.
                self._schedule_fallback(operation, self._tick + timeout)
            else:
                self._suspect(leader)

    def step(self, message: Message) -> None:
        """Handle a message received from a peer; stale answers are dropped. Raises
        ``ValueError`` for a message no correct peer sends (one not addressed to this node, or
        from itself)."""
        if message.to != self.node_id or message.sender == self.node_id:
            raise ValueError(f"{message.type.name} from {message.sender} to {message.to} refused")
        # Whatever it sends, a suspected proposer that reaches us is back (a partition healed,
        # a restart): forward to it again rather than propose beside it.
        self._suspected_until.pop(message.sender, None)
        self._step(message)

    def _step(self, message: Message) -> None:
        if message.type in (MessageType.PREPARE, MessageType.ACCEPT):
            if self.node_id not in self.acceptors:
                self.counters.stale_messages += 1
                return
            self._messages.append(self.acceptor.step(message))
            return
        if message.type is MessageType.FORWARD:
            self._serve_forward(message)
            return
        if message.type is MessageType.FORWARDED:
            self._forward_answered(message)
            return
        round_ = self._rounds.get(message.key)
        if (
            round_ is None
            or round_.ballot != message.ballot
            or message.sender not in self.acceptors
        ):
            self.counters.stale_messages += 1
            return
        if message.type is MessageType.REJECT:
            self._counter = max(self._counter, message.accepted[0])
            self.counters.rounds_conflicted += 1
            self._abandon(round_)
        elif message.type is MessageType.PROMISE and not round_.accepting:
            round_.promises[message.sender] = (message.accepted, message.value)
            if len(round_.promises) >= self.majority:
                self._accept_phase(round_)
        elif message.type is MessageType.ACCEPTED and round_.accepting:
            round_.accepted_by.add(message.sender)
            if len(round_.accepted_by) >= self.majority:
                self._succeed(round_)
        else:
            self.counters.stale_messages += 1

    # -- the proposer --

    def _start_round(self, key: str) -> None:
        if key in self._rounds or key in self._retry_at_tick or not self._queues.get(key):
            return
        queue = self._queues[key]
        batch = queue[: self.config.batch_operations_max]
        self._queues[key] = queue[len(batch) :]
        self.counters.rounds_started += 1
        prepared = self._prepared.pop(key, None)
        if prepared is not None:
            ballot, value = prepared
            round_ = _Round(key, ballot, batch, self._tick, self._tick)
            round_.promises[self.node_id] = (ZERO_BALLOT, value)
            self._rounds[key] = round_
            self.counters.rounds_one_round_trip += 1
            self._accept_phase(round_)
            return
        self._counter += 1
        ballot = (self._counter, self.proposer_id)
        round_ = _Round(key, ballot, batch, self._tick, self._tick)
        self._rounds[key] = round_
        self._broadcast(MessageType.PREPARE, key, ballot, b"")

    def _accept_phase(self, round_: _Round) -> None:
        # The value accepted with the highest ballot among a majority's promises: any value a
        # majority accepted before is among them, with the highest ballot (the paper's §2.2).
        _, value = max(round_.promises.values(), key=lambda promise: promise[0])
        commands = [operation.command for operation in round_.operations]
        try:
            new_value, answers = apply_batch(self.window, round_.key, value, commands)
        except (DecodeError, ConfigError) as error:
            self._refuse(round_, f"the paxos value of {round_.key!r} does not restore: {error}")
            return
        round_.answers = {
            operation.id: answer
            for operation, answer in zip(round_.operations, answers, strict=True)
        }
        round_.accepting = True
        round_.phase_tick = self._tick
        round_.value = new_value
        for operation in round_.operations:
            operation.sent_in_accept = True
        if self.config.one_round_trip:
            self._counter += 1  # reserved: no other round of this proposer uses it
            round_.next_ballot = (self._counter, self.proposer_id)
        self._broadcast(
            MessageType.ACCEPT, round_.key, round_.ballot, new_value, round_.next_ballot
        )

    def _refuse(self, round_: _Round, reason: str) -> None:
        """End a round whose value cannot be read (taken with other windows, or corrupt): its
        operations fail as refused, having changed nothing."""
        del self._rounds[round_.key]
        self._prepared.pop(round_.key, None)
        self.counters.values_unreadable += 1
        for operation in round_.operations:
            self.counters.operations_failed += 1
            self._finish(operation, Outcome(operation.id, None, reason, refused=True))

    def _succeed(self, round_: _Round) -> None:
        del self._rounds[round_.key]
        self._attempts.pop(round_.key, None)
        self._latencies.append(self._tick - round_.started_tick)
        self.counters.rounds_succeeded += 1
        if round_.next_ballot != ZERO_BALLOT:
            if len(self._prepared) >= self.config.prepared_keys_max:
                del self._prepared[next(iter(self._prepared))]
            self._prepared[round_.key] = (round_.next_ballot, round_.value)
        for operation in round_.operations:
            self.counters.operations_ok += 1
            self._finish(operation, Outcome(operation.id, round_.answers[operation.id]))
        self._start_round(round_.key)

    def _abandon(self, round_: _Round) -> None:
        """Give the round up; its operations go back to the front of the queue and the key
        waits out a backoff before the next ballot."""
        key = round_.key
        del self._rounds[key]
        self._prepared.pop(key, None)
        self._queues[key] = round_.operations + self._queues.get(key, [])
        attempts = self._attempts.get(key, 0) + 1
        self._attempts[key] = attempts
        self._retry_at_tick[key] = self._tick + self.backoff_ticks(attempts)

    def backoff_ticks(self, attempts: int) -> int:
        """The wait before retry ``attempts`` of a key (Cassandra's ``ContentionStrategy``):
        uniform in ``[min, max)`` with ``max = clamp(p95 * 1.8^attempts)`` and
        ``min = p50 * 0.66``, over the durations of recent successful rounds."""
        config = self.config
        p50, p95 = self._latency_percentiles()
        ceiling = p95 * 1.8**attempts
        ceiling = min(
            float(config.backoff_max_ticks), max(float(config.backoff_min_ticks), ceiling)
        )
        floor = min(p50 * 0.66, ceiling)
        return max(1, math.ceil(self.rng.uniform(floor, ceiling)))

    def _latency_percentiles(self) -> tuple[float, float]:
        if not self._latencies:
            return 0.0, float(self.config.backoff_min_ticks)
        ordered = sorted(self._latencies)
        last = len(ordered) - 1
        return float(ordered[last // 2]), float(ordered[(last * 95) // 100])

    def _expire(self) -> None:
        for key in list(self._queues):
            kept = []
            for operation in self._queues[key]:
                if operation.deadline_tick <= self._tick:
                    self._fail(operation)
                else:
                    kept.append(operation)
            self._queues[key] = kept
            if not kept and key not in self._rounds:
                del self._queues[key]
                self._retry_at_tick.pop(key, None)
                self._attempts.pop(key, None)
        for round_ in self._rounds.values():
            expired = [o for o in round_.operations if o.deadline_tick <= self._tick]
            for operation in expired:
                self._fail(operation)
            if expired:
                round_.operations = [o for o in round_.operations if o.deadline_tick > self._tick]

    def _fail(self, operation: _Operation) -> None:
        what = "read" if operation.command is None else "write"
        unknown = operation.sent_in_accept and operation.command is not None
        text = UNKNOWN_OUTCOME if unknown else NOT_APPLIED
        if operation.command is None:
            text = "paxos read of {key!r} timed out without a majority"
        self.counters.operations_failed += 1
        self._finish(
            operation,
            Outcome(operation.id, None, text.format(what=what, key=operation.key), unknown),
        )

    def _broadcast(
        self,
        kind: MessageType,
        key: str,
        ballot: Ballot,
        value: bytes,
        next_ballot: Ballot = ZERO_BALLOT,
    ) -> None:
        for acceptor in self.acceptors:
            message = Message(kind, self.node_id, acceptor, key, ballot, next_ballot, value)
            if acceptor == self.node_id:
                self._local_answers.append(self.acceptor.step(message))
            else:
                self._messages.append(message)

    # -- outputs --

    def has_ready(self) -> bool:
        """True when :meth:`ready` would return something to do."""
        return bool(
            self.acceptor.unsynced or self._messages or self._outcomes or self._local_answers
        )

    def ready(self) -> Ready:
        """Take the pending work; call :meth:`advance` with it once done."""
        if self._outstanding is not None:
            raise RuntimeError("ready() called again before advance()")
        ready = Ready(
            self.acceptor.take_unsynced(),
            tuple(self._messages),
            tuple(self._outcomes),
            tuple(self._local_answers),
        )
        self._messages, self._outcomes, self._local_answers = [], [], []
        self._outstanding = ready
        return ready

    def advance(self, ready: Ready) -> None:
        """The driver persisted, sent and delivered ``ready``: the local acceptor's answers,
        durable now, reach the local proposer."""
        if ready is not self._outstanding:
            raise RuntimeError("advance() must be given the Ready last returned by ready()")
        self._outstanding = None
        for answer in ready.local_answers:
            self._step(answer)

    # -- inspection --

    @property
    def pending(self) -> int:
        """Operations not finished yet."""
        queued = sum(len(queue) for queue in self._queues.values()) + len(self._forwarded)
        return queued + sum(len(r.operations) for r in self._rounds.values())
