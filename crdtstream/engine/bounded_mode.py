"""Bounded mode: quotas that hold under any partition and are spent locally (escrow).

A ``bounded`` key has a ``limit`` per window (its policy rule). Each window of the key is one
:class:`~crdtstream.crdt.BoundedCounter` whose rights start split over the rule's ``members``;
a node consumes locally, with no round trip, while it holds enough rights, and otherwise asks
its peers, who transfer part of their spare rights to it. A request that rights do not reach in
time is refused (``no_rights``); the limit is never exceeded, because each replica spends only
rights it holds and merges cannot create rights (see :mod:`crdtstream.crdt.bounded`).

**Who is granted what.** Window ``w`` covers ``[w * window_ms, (w + 1) * window_ms)``. Member
``i`` of the rule's members (sorted) is allocated ``limit // n`` rights, plus one for the first
``limit % n`` members. A node's replica grants itself its node's share of a window lazily (when
it first touches the window) and **only if it started before the window opened**, so no share
is ever granted twice. Each run writes under a row named ``<replica>/<8 hex digits>``. The
member list is fixed by configuration rather than taken from gossip membership: nodes with
different views of the membership would split the limit differently, and the shares could sum
to more than it.

**Durability** (``durable``: the driver has a local log). Every change of a window this node
holds (a grant, a consumption, a transfer, a merge) is handed to the driver as a
``BOUNDED_STATE`` record (:meth:`BoundedKeys.take_log_records`), and the driver appends it and
syncs the log before it sends any frame and before it answers the consumptions waiting for it
(:meth:`BoundedKeys.logged`). So no state of this run's row exists outside the node that is
not on its disk: a restarted node resumes the row (:meth:`BoundedKeys.resume`) with its rights,
spending and transfers, gives nothing twice, and loses no answered consumption. A window the
records lack was never seen outside the node; it is granted again only if the new run may take
it anyway. Without a log (no data directory, or ``durability = "none"``) every run takes a
fresh row: a crash loses the consumptions its peers had not heard of yet, and the rights left in
the old row are stranded until the window ends, or until the row is retired.

**Retiring rows** (:meth:`BoundedKeys.retire`). A removed member's rows are retired by a strong
decision (:class:`Retirement`), committed through the Raft log as an item of the strong set
:data:`RETIREMENTS_KEY`, so every voter applies it. One decision per member commits: the
command carries an idempotency key naming the member, so the state machine refuses a second
one, and the set never holds two decisions for the same row (a voter that restores a snapshot
applies the same one as every other voter). The proposer first gathers every live node's copy
of the member's rows (:meth:`BoundedKeys.gather_rows`: ``BOUNDED_ROWS_ASK`` to each, answered
with ``BOUNDED_ROWS``; a node that does not answer in time makes the retirement unavailable,
and a member that is dead without being removed makes it refused) and joins them
(:meth:`RetiredRow.join`): the decision freezes each row at that state ``F`` and names one
heir, the lowest-id live Raft voter (voters apply decisions from the log; other nodes do not).
The heir
re-issues what the row held at ``F`` — ``grants_F + received - sent_F - spent_F``, where
``received`` grows if peers still transfer to the row — through a row of its own
(:func:`heir_row`: a grant, passed at once to its own row), and every node discounts the grants
of heir rows when it checks a state against the limit. Only a run of the heir that was
running when the decision was proposed (``proposed_ms``), or that resumed its row from its log,
re-issues: the heir row's totals are the same whoever computes them, but a fresh run of the heir
would pass them a second time to a row of its own.

Why this is safe: only the member writes its row's slots, so if it is dead the row never
changes again, and the rights it held at ``F`` are spent once, by the one heir. What can break
it, and is not hidden: (1) the member was not dead, or came back with its data directory
despite its removal, and spent or transferred past ``F``: every node that applied the decision
and sees that counts the excess in ``retired_overspent``; (2) the member died with changes no
live node had received (answered, then killed before its next gossip round, its disk lost), or
only a node that left or was removed had them: the heir re-issues rights already used, and what
clients were told was consumed can exceed the limit by that much (the counted value, what
nodes show, does not). A decision applied twice changes nothing; retiring a member that is not
removed is refused before anything is proposed. The strong log keeps a decision for its
windows' retention (10 minutes by default), and the idempotency table that makes it the only
one for its member for 24 hours; a node with the local log also keeps the decisions it applied
in its log and snapshot while their windows are kept (``BOUNDED_RETIREMENT`` records), so a
restarted heir still re-issues and a restarted node still counts. A node that starts afresh
after the strong log dropped a decision does not know it: it accepts the heir's rights, but
does not count the row's overspending.

**Moving rights.** Each gossip round this node sends its state of recently changed windows,
plus a rotating slice of the others, to ``fanout`` live peers (``BOUNDED_STATE``); every entry
carries demand hints: the sender's unmet demand and its use this window. Between rounds, the
windows it consumed from are pushed to one live peer at most every :data:`PUSH_MS`, so its
spending is known outside it within tens of milliseconds, not a round. A waiting consumption
also sends ``BOUNDED_REQUEST`` for its shortfall each round to the peers believed to hold the
most rights. A peer answers a request or a hint of unmet demand by transferring
``min(shortfall, spare)`` (spare: its rights minus its own unmet demand, and minus half of them
while it has used the key this window), and sends the changed state back at once. A peer that
holds rights and has not used the window also passes part of its spare rights to a peer that
reports use and holds less than it used, before that peer runs short. A repeated request from
the same replica within one round is not served twice.

Pure, like the other cores: time comes in as arguments, frames leave through ``send``.
Frames: ``BOUNDED_STATE [replica, [[key, window, counter body, unmet, used], ...]]`` (also the
local log's records of bounded windows), ``BOUNDED_REQUEST [replica, [[key, window, amount],
...]]``, ``BOUNDED_RETIREMENT [member, heir, proposed_ms, [[key, window, replica, frozen
row], ...]]``, ``BOUNDED_ROWS_ASK [replica, [nonce, member]]`` and ``BOUNDED_ROWS [replica,
[nonce, member, part, parts, rows]]``.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from crdtstream import wire
from crdtstream.config import PolicyRule
from crdtstream.crdt.bounded import NO_RIGHTS, BoundedCounter
from crdtstream.engine.requests import FRAME_BYTES_MAX
from crdtstream.engine.tickets import Answer, Ticket
from crdtstream.errors import DecodeError, InvalidValueError, RefusedError, UnavailableError
from crdtstream.window.results import WindowValue

__all__ = [
    "BOUNDED_OPERATIONS",
    "BOUNDED_TAGS",
    "RETIREMENTS_KEY",
    "BoundedCounters",
    "BoundedKeys",
    "BoundedRequest",
    "BoundedState",
    "RetiredRow",
    "Retirement",
    "RowsAnswer",
    "RowsAsk",
    "StateEntry",
    "decode_bounded",
    "decode_retirement",
    "heir_row",
    "owner_of",
    "share_of",
]

BOUNDED_TAGS: Final = frozenset(
    (
        wire.Tag.BOUNDED_STATE,
        wire.Tag.BOUNDED_REQUEST,
        wire.Tag.BOUNDED_ROWS_ASK,
        wire.Tag.BOUNDED_ROWS,
    )
)

BOUNDED_OPERATIONS: Final = ("conditional_add", "consume")
"""The writes a bounded key takes: both spend ``value`` units of the quota."""

WINDOWS_KEPT: Final = 2
"""Windows kept per key: the open one and the one before (late gossip about it is harmless)."""

ROTATING_KEYS_PER_ROUND: Final = 32
"""Unchanged windows re-sent per round, in turn, so a lost frame is repaired."""

RECENT_ROUNDS: Final = 3
"""A window changed within this many rounds is sent every round."""

PUSH_MS: Final = 20
"""Between rounds, windows this node consumed from are pushed to one live peer at most this
often, so that its spending is known outside it within about this long (what a retirement
of its rows can miss if it dies for good)."""

Send = Callable[[str, bytes], None]

Gathered = Callable[[list["RetiredRow"] | None, Exception | None], None]
"""Called once a gathering of rows ends: ``(rows, None)``, or ``(None, error)``."""


def owner_of(replica: str) -> str:
    """The node id a bounded row belongs to: rows are named ``<node_id>~<hex>/<hex>``."""
    return replica.split("~", 1)[0]


HEIR_SUFFIX: Final = "^heir"

RETIREMENTS_KEY: Final = "__crdtstream.bounded.retirements"
"""The strong (Raft) set key whose items are the committed retirements, as hex frames."""


def heir_row(retired: str) -> str:
    """The row through which the heir re-issues the rights of the retired row ``retired``
    (written only by the heir, whom the decision names)."""
    return f"{retired}{HEIR_SUFFIX}"


def share_of(rule: PolicyRule, node_id: str) -> int:
    """The rights ``node_id`` is allocated per window by ``rule`` (0 for a non-member)."""
    members = sorted(rule.members)
    if node_id not in members or rule.limit is None:
        return 0
    index = members.index(node_id)
    base, extra = divmod(rule.limit, len(members))
    return base + (index < extra)


@dataclass(slots=True)
class BoundedCounters:
    """What the bounded keys of one node did (the ``bounded`` section of the node's status)."""

    consumed_local: int = 0
    """Consumptions served at once from this node's rights."""
    consumed_after_wait: int = 0
    """Consumptions served once peers' transfers arrived."""
    refused_no_rights: int = 0
    """Consumptions refused: more than is left, or rights did not arrive in time."""
    requests_sent: int = 0
    """``BOUNDED_REQUEST`` frames sent."""
    transfers_given: int = 0
    """Transfers this node made to a peer that asked or hinted at demand."""
    rights_given: int = 0
    """Rights those transfers moved."""
    malformed: int = 0
    """``BOUNDED_*`` frames that did not decode."""
    entries_not_bounded_here: int = 0
    """State entries of keys that are not bounded by this node's rules."""
    entries_over_limit: int = 0
    """State entries claiming more rights than the key's limit creates (dropped)."""
    rights_handed_over: int = 0
    """Rights passed to a live peer on leaving the cluster."""
    windows_resumed: int = 0
    """Windows of this node's previous run restored from its data directory at start."""
    rows_retired: int = 0
    """Replica rows retired by a strong decision (see :meth:`BoundedKeys.retire`)."""
    rights_reclaimed: int = 0
    """Rights of retired rows this node transferred to itself as their heir."""
    retired_overspent: int = 0
    """Units a retired row was seen to spend beyond its frozen state (its member was not dead)."""
    row_copies_sent: int = 0
    """Copies of a member's rows sent to a node gathering them for a retirement."""
    gatherings_failed: int = 0
    """Gatherings of rows for a retirement that a live node did not answer in time."""
    states_pushed: int = 0
    """State frames pushed to one peer between rounds, soon after this node consumed."""


@dataclass(slots=True)
class _Window:
    """One window of one key: its counter, this node's use of it, peers' latest hints."""

    counter: BoundedCounter
    rule: PolicyRule
    used: int = 0
    hints: dict[str, tuple[int, int]] = field(default_factory=dict)  # replica -> (unmet, used)


@dataclass(slots=True)
class _Gathering:
    """Copies of one member's rows being collected from every live node for a retirement."""

    member: str
    deadline_ms: int
    timeout_ms: int
    done: Gathered
    copies: list[list[RetiredRow]]
    waiting: set[str]
    parts: dict[str, set[int]] = field(default_factory=dict)  # node id -> parts received


@dataclass(slots=True)
class _Pending:
    """A consumption waiting for rights."""

    ticket: Ticket
    key: str
    rule: PolicyRule
    amount: int
    deadline_ms: int
    op: str


class BoundedKeys:
    """The bounded keys of one node: local consumption, rights requests, transfers, gossip."""

    def __init__(
        self,
        node_id: str,
        replica: str,
        rng: random.Random,
        send: Send,
        *,
        started_ms: int,
        timeout_ms: int,
        fanout: int = 3,
        round_ms: int = 200,
        durable: bool = False,
    ) -> None:
        """``replica`` is the node's replica; this run writes under a fresh name derived from
        it. ``started_ms`` (wall clock) decides which windows' allocation this run may take."""
        self.node_id = node_id
        self.replica = f"{replica}/{rng.getrandbits(32):08x}"
        self._rng = rng
        self._send = send
        self.started_ms = started_ms
        self.timeout_ms = timeout_ms
        self.fanout = fanout
        self.round_ms = round_ms
        self._next_round_ms = 0
        self._windows: dict[tuple[str, int], _Window] = {}
        # Per window, the round it last changed in, while that is within RECENT_ROUNDS.
        self._recent: dict[tuple[str, int], int] = {}
        self._rotating: deque[tuple[str, int]] = deque()  # every window, in turn to be re-sent
        self._expiry: list[tuple[int, str, int]] = []  # heap: (no longer kept from ms, window)
        self._pending: list[_Pending] = []
        self._owners: dict[str, str] = {self.replica: node_id}  # replica -> node id
        self._latest: dict[str, str] = {}  # node id -> the replica it last sent under
        self._served: dict[tuple[str, str, int], int] = {}  # (replica, key, window) -> round
        self._round = 0
        self._peers: list[str] = []
        self.counters = BoundedCounters()
        self.durable = durable
        self._unlogged: set[tuple[str, int]] = set()  # windows changed since the last take
        # (key, window) -> retired row -> (the decision's row, overspending reported so far)
        self._retired: dict[tuple[str, int], dict[str, tuple[RetiredRow, int]]] = {}
        self._reissues: set[str] = set()  # retired rows whose rights this run re-issues
        self._decisions: dict[str, Retirement] = {}  # member -> the decision applied here
        self._unlogged_decisions: list[Retirement] = []
        self._resumed = False
        self._awaiting_log: list[tuple[Ticket, Answer]] = []
        self._gatherings: dict[int, _Gathering] = {}  # nonce -> gathering
        self._consumed_unpushed: set[tuple[str, int]] = set()  # windows spent from since a push
        self._next_push_ms = 0

    # ------------------------------------------------------------------ requests

    def write(
        self,
        ticket: Ticket,
        key: str,
        rule: PolicyRule,
        op: str,
        value: object,
        limit: object,
        now_ms: int,
        monotonic_ms: int,
    ) -> None:
        """Spend ``value`` units of ``key``'s quota: at once if this node holds the rights,
        else once peers transfer them, else refused at the deadline (``no_rights``)."""
        if op not in BOUNDED_OPERATIONS:
            raise InvalidValueError(
                f"{key!r} is bounded: it takes {list(BOUNDED_OPERATIONS)}, not {op!r}"
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidValueError(f"a bounded key consumes an integer >= 0, got {value!r}")
        if limit is not None and limit != rule.limit:
            raise InvalidValueError(
                f"{key!r} is bounded by its policy (limit {rule.limit}), not by {limit!r}"
            )
        window = self._window(key, rule, now_ms)
        assert rule.limit is not None
        if value > rule.limit - window.counter.value:
            # More than is left anywhere, as far as this node knows (it never knows less spent
            # than there is): no transfer can make it possible.
            self.counters.refused_no_rights += 1
            raise RefusedError(
                f"{NO_RIGHTS}: {value} asked of {key!r}, at most "
                f"{rule.limit - window.counter.value} left of {rule.limit} this window"
            )
        pending = _Pending(ticket, key, rule, value, monotonic_ms + self.timeout_ms, op)
        waiting_here = any(p.key == key and not p.ticket.done for p in self._pending)
        if not waiting_here and self._try(pending, now_ms):
            self.counters.consumed_local += 1
            return
        self._pending.append(pending)
        self._ask(key, rule, now_ms)

    def read(self, key: str, rule: PolicyRule, now_ms: int) -> Answer:
        """This node's view of ``key``: each kept window's consumption (a lower bound of the
        cluster's), and in ``value`` a dict of the open window's ``value`` (consumed),
        ``limit`` and this node's ``rights``."""
        current = self._window(key, rule, now_ms)
        index = self._index(rule, now_ms)
        windows = []
        for number in (index - 1, index):
            state = self._windows.get((key, number))
            if state is not None:
                start = number * rule.window_ms
                windows.append(
                    WindowValue(start, start + rule.window_ms, state.counter.value, False)
                )
        view = {
            "value": current.counter.value,
            "limit": rule.limit,
            "rights": current.counter.rights(self.replica),
        }
        return Answer(key, "counter", "bounded", "bounded", windows=tuple(windows), value=view)

    def key_names(self) -> list[str]:
        """The keys of the windows kept here, sorted."""
        return sorted({key for key, _ in self._windows})

    def rights(self, key: str, rule: PolicyRule, now_ms: int) -> int:
        """This node's rights in ``key``'s open window."""
        return self._window(key, rule, now_ms).counter.rights(self.replica)

    # ------------------------------------------------------------------ time and frames

    def tick(
        self,
        now_ms: int,
        monotonic_ms: int,
        peers: Sequence[str],
        *,
        gossip_round: bool | None = None,
    ) -> None:
        """Serve or refuse waiting consumptions; on a gossip round (every ``round_ms``, or
        when ``gossip_round`` says so) also ask for rights again and send state with demand
        hints to ``fanout`` of ``peers`` (live members)."""
        self._serve(now_ms, monotonic_ms)
        self._expire_gatherings(monotonic_ms)
        if gossip_round is None:
            gossip_round = monotonic_ms >= self._next_round_ms
        if not gossip_round:
            self._push(monotonic_ms, peers)
            return
        self._consumed_unpushed.clear()  # the round sends them to fanout peers
        self._next_round_ms = monotonic_ms + self.round_ms
        self._round += 1
        self._peers = list(peers)
        self._ask_rows_again()
        for key, rule in {(p.key, p.rule.pattern): p.rule for p in self._pending}.items():
            self._ask(key[0], rule, now_ms)
        self._drop_old(now_ms)
        if peers:
            targets = self._rng.sample(list(peers), min(self.fanout, len(peers)))
            for frame in self._state_frames(self._gossip_entries()):
                for peer in targets:
                    self._send(peer, frame)

    def step(
        self,
        source: str,
        payload: bytes,
        rules: Callable[[str], PolicyRule | None],
        now_ms: int,
        monotonic_ms: int,
    ) -> None:
        """Handle one ``BOUNDED_*`` frame from ``source``; ``rules`` gives a key's bounded rule
        (None when the key is not bounded here: its entries are counted and dropped)."""
        try:
            message = decode_bounded(payload)
        except DecodeError:
            self.counters.malformed += 1
            return
        self._owners[message.replica] = source
        self._latest[source] = message.replica
        if isinstance(message, RowsAsk):
            self._answer_rows(source, message)
            return
        if isinstance(message, RowsAnswer):
            self._take_rows(source, message)
            return
        if isinstance(message, BoundedRequest):
            for key, number, amount in message.entries:
                rule = rules(key)
                if rule is not None and number == self._index(rule, now_ms):
                    self._give(source, message.replica, key, rule, number, amount, now_ms)
            return
        for entry in message.entries:
            rule = rules(entry.key)
            if rule is None:
                self.counters.entries_not_bounded_here += 1  # a peer with other rules
                continue
            if self._granted_by_members(entry.counter) > (rule.limit or 0):
                self.counters.entries_over_limit += 1  # more rights than the limit makes
                continue
            window = self._window_at(entry.key, rule, entry.window, now_ms)
            if window is None:
                continue  # a window too old (or too new) to keep
            before = window.counter.to_bytes()
            window.counter.merge(entry.counter)
            if window.counter.to_bytes() != before:
                self._changed(entry.key, entry.window, window)
                self._settle_retired(entry.key, entry.window, window)
            window.hints[message.replica] = (entry.unmet, entry.used)
            if entry.window == self._index(rule, now_ms):
                self._answer_hint(source, message.replica, entry, rule, window, now_ms)
        self._serve(now_ms, monotonic_ms)

    def hand_over(self, peers: Sequence[str], now_ms: int) -> int:
        """On leaving the cluster: transfer this run's rights in every open window to the live
        peer that used the key most (as its hints say), so they are not stranded with this
        run's row. Returns the rights handed over. A lost frame leaves them where they would
        have been anyway: with a row no one can spend from."""
        handed = 0
        live = set(peers)
        for (key, number), window in self._windows.items():
            held = window.counter.rights(self.replica)
            if held <= 0 or number != self._index(window.rule, now_ms):
                continue
            heirs = [
                (window.hints.get(replica, (0, 0))[::-1], node_id, replica)
                for node_id, replica in sorted(self._latest.items())
                if node_id in live
            ]
            if not heirs:
                continue
            _, node_id, replica = max(heirs)
            window.counter.transfer(held, replica)
            self._changed(key, number, window)
            handed += held
            for frame in self._state_frames([(key, number, window)]):
                self._send(node_id, frame)
                self._send(node_id, frame)  # twice: one loss should not strand them
        self.counters.rights_handed_over += handed
        return handed

    # ------------------------------------------------------------------ durability

    def take_log_records(self) -> list[bytes]:
        """The windows changed since the last call, as ``BOUNDED_STATE`` frames under this
        run's replica, for the driver to append to the local log (empty when not durable).

        The driver appends them and syncs the log before it sends any frame or calls
        :meth:`logged`: then every state of this run's row a peer or a client ever saw is on
        disk, and :meth:`resume` can take the row up again after a crash."""
        decisions, self._unlogged_decisions = self._unlogged_decisions, []
        if not self.durable or not (self._unlogged or decisions):
            self._unlogged.clear()
            return []
        changed = [
            (key, number, self._windows[(key, number)])
            for key, number in sorted(self._unlogged)
            if (key, number) in self._windows
        ]
        self._unlogged.clear()
        return [decision.to_bytes() for decision in decisions] + self._state_frames(changed)

    def snapshot_records(self) -> list[bytes]:
        """Every kept window as ``BOUNDED_STATE`` frames, after the retirements applied here
        that still name a kept window (what a snapshot holds); marks them logged, since the
        driver writes them durably before it truncates the log."""
        self._unlogged.clear()
        self._unlogged_decisions.clear()
        kept = sorted(self._windows.items(), key=lambda item: item[0])
        decisions = [
            decision.to_bytes()
            for _, decision in sorted(self._decisions.items())
            if any((row.key, row.window) in self._windows for row in decision.rows)
        ]
        states = self._state_frames([(key, number, window) for (key, number), window in kept])
        return decisions + states

    @property
    def unlogged(self) -> bool:
        """Whether a window changed, or a retirement was applied, since the last
        :meth:`take_log_records`."""
        return self.durable and bool(self._unlogged or self._unlogged_decisions)

    @property
    def awaiting_log(self) -> int:
        """Consumptions done whose answer waits for :meth:`logged`."""
        return len(self._awaiting_log)

    def logged(self) -> None:
        """The driver made the records taken so far durable: answer the consumptions that
        waited for it (one sync answers all of them)."""
        waiting, self._awaiting_log = self._awaiting_log, []
        for ticket, answer in waiting:
            ticket.complete(answer)

    def resume(
        self, records: Sequence[bytes], rules: Callable[[str], PolicyRule | None], now_ms: int
    ) -> int:
        """Take up the replica row of this node's previous run from its logged ``records``
        (the snapshot's then the log's, in order): its name, every kept window's state, and
        the retirements it applied (:meth:`retire`, again: they outlive the strong log's
        retention of them). Call before anything else. Returns the windows restored.

        Safe because the previous run logged every change before it left the node: no peer
        holds a newer state of the row than the records, so spending and transferring from
        it here cannot give the same rights twice. A window the records lack was never seen
        outside the node, and it is not granted again unless this run may take it anyway
        (its start is after ``started_ms``). Raises :class:`DecodeError` for a bad record.
        """
        if self._windows:
            raise RuntimeError("resume() is called before any window is made")
        decisions: list[Retirement] = []
        states: list[BoundedState] = []
        for record in records:
            if wire.peek_tag(record) == wire.Tag.BOUNDED_RETIREMENT:
                decisions.append(decode_retirement(record))
            elif isinstance(message := decode_bounded(record), BoundedState):
                states.append(message)
        restored = self._resume_row(states, rules, now_ms) if states else 0
        for decision in decisions:
            self.retire(decision, rules, now_ms)
        self._unlogged_decisions.clear()  # on the disk already
        return restored

    def _resume_row(
        self,
        states: Sequence[BoundedState],
        rules: Callable[[str], PolicyRule | None],
        now_ms: int,
    ) -> int:
        """Take up the row the logged ``states`` name, with every kept window's state."""
        replicas = {state.replica for state in states}
        if len(replicas) != 1:
            raise DecodeError(f"the bounded records name several replicas: {sorted(replicas)}")
        del self._owners[self.replica]
        self.replica = states[0].replica
        self._owners[self.replica] = self.node_id
        for state in states:
            for entry in state.entries:
                rule = rules(entry.key)
                if rule is None:
                    continue  # no longer bounded here
                current = self._index(rule, now_ms)
                if not current - WINDOWS_KEPT < entry.window <= current:
                    continue
                window = self._windows.get((entry.key, entry.window))
                if window is None:
                    window = _Window(BoundedCounter(self.replica), rule)
                    self._add_window(entry.key, entry.window, window)
                window.counter.merge(entry.counter)
                window.used = max(window.used, entry.used)
        self._resumed = True
        self.counters.windows_resumed += len(self._windows)
        return len(self._windows)

    def _changed(self, key: str, number: int, window: _Window) -> None:
        """Note that ``window`` changed: gossiped in the next rounds, logged when durable."""
        self._recent[(key, number)] = self._round
        if self.durable:
            self._unlogged.add((key, number))

    def _acknowledge(self, ticket: Ticket, answer: Answer) -> None:
        """Answer a consumption now, or once it is logged when durable."""
        if self.durable:
            self._awaiting_log.append((ticket, answer))
        else:
            ticket.complete(answer)

    # ------------------------------------------------------------------ retiring rows

    def rows_of(self, member: str) -> list[RetiredRow]:
        """This node's copy of the rows of ``member``'s runs in every kept window (their own
        slots only): a proposer joins the copies of every live node (:meth:`gather_rows`) and
        retires them at that state."""
        rows = []
        for (key, number), window in sorted(self._windows.items(), key=lambda item: item[0]):
            for replica in window.counter.writers():
                if owner_of(replica) == member and not replica.endswith(HEIR_SUFFIX):
                    rows.append(RetiredRow(key, number, replica, window.counter.row(replica)))
        return rows

    def gather_rows(
        self,
        member: str,
        peers: Sequence[str],
        monotonic_ms: int,
        timeout_ms: int,
        done: Gathered,
    ) -> None:
        """Collect the copy of ``member``'s rows held by every node in ``peers`` (the live
        ones), join them with this node's (:meth:`RetiredRow.join`) and call ``done(rows,
        None)``: the state a retirement freezes the rows at. The ask is sent again each round
        to the peers that have not answered (frames may be lost); if one has not answered
        within ``timeout_ms``, ``done(None, UnavailableError)`` names it. Without every live
        copy the join could miss the dead member's last changes, which some live node alone
        received, and its heir would re-issue rights already used."""
        nonce = self._rng.getrandbits(62)
        gathering = _Gathering(
            member,
            monotonic_ms + timeout_ms,
            timeout_ms,
            done,
            [self.rows_of(member)],
            set(peers) - {self.node_id},
        )
        if not gathering.waiting:
            done(RetiredRow.join(gathering.copies), None)
            return
        self._gatherings[nonce] = gathering
        self._ask_rows(nonce, gathering)

    def _ask_rows(self, nonce: int, gathering: _Gathering) -> None:
        frame = wire.encode(wire.Tag.BOUNDED_ROWS_ASK, [self.replica, [nonce, gathering.member]])
        for peer in sorted(gathering.waiting):
            self._send(peer, frame)

    def _ask_rows_again(self) -> None:
        for nonce, gathering in list(self._gatherings.items()):
            self._ask_rows(nonce, gathering)

    def _push(self, monotonic_ms: int, peers: Sequence[str]) -> None:
        """Send the windows this node consumed from since the last push or round to one
        random live peer, at most every :data:`PUSH_MS`: the spending a retirement of this
        node's rows could miss, were it to die for good now, is that of the last push."""
        if not self._consumed_unpushed or not peers or monotonic_ms < self._next_push_ms:
            return
        self._next_push_ms = monotonic_ms + PUSH_MS
        entries = [
            (key, number, self._windows[(key, number)])
            for key, number in sorted(self._consumed_unpushed)
            if (key, number) in self._windows
        ]
        self._consumed_unpushed.clear()
        peer = self._rng.choice(list(peers))
        for frame in self._state_frames(entries):
            self._send(peer, frame)
            self.counters.states_pushed += 1

    def _expire_gatherings(self, monotonic_ms: int) -> None:
        for nonce, gathering in list(self._gatherings.items()):
            if monotonic_ms < gathering.deadline_ms:
                continue
            del self._gatherings[nonce]
            self.counters.gatherings_failed += 1
            gathering.done(
                None,
                UnavailableError(
                    f"no copy of {gathering.member!r}'s bounded rows came from "
                    f"{sorted(gathering.waiting)} within {gathering.timeout_ms} ms: a "
                    "retirement needs the copy of every live node"
                ),
            )

    def _answer_rows(self, source: str, ask: RowsAsk) -> None:
        """Send ``source`` this node's copy of the rows it asked for, in parts under the
        frame budget (an empty copy is one empty part)."""
        rows = [
            [row.key, row.window, row.replica, row.frozen.to_bytes()]
            for row in self.rows_of(ask.member)
        ]
        parts: list[list[list[Any]]] = [[]]
        size = 0
        for row in rows:
            row_bytes = len(wire.encode(wire.Tag.BOUNDED_ROWS, row))
            if parts[-1] and size + row_bytes > FRAME_BYTES_MAX:
                parts.append([])
                size = 0
            parts[-1].append(row)
            size += row_bytes
        for index, part in enumerate(parts):
            body = [self.replica, [ask.nonce, ask.member, index, len(parts), part]]
            self._send(source, wire.encode(wire.Tag.BOUNDED_ROWS, body))
        self.counters.row_copies_sent += 1

    def _take_rows(self, source: str, answer: RowsAnswer) -> None:
        gathering = self._gatherings.get(answer.nonce)
        if gathering is None or source not in gathering.waiting:
            return  # a late or repeated answer
        if answer.member != gathering.member:
            self.counters.malformed += 1
            return
        received = gathering.parts.setdefault(source, set())
        if answer.part in received:
            return
        received.add(answer.part)
        gathering.copies.append(list(answer.rows))
        if len(received) == answer.parts:
            gathering.waiting.discard(source)
        if not gathering.waiting:
            del self._gatherings[answer.nonce]
            gathering.done(RetiredRow.join(gathering.copies), None)

    def retire(
        self, retirement: Retirement, rules: Callable[[str], PolicyRule | None], now_ms: int
    ) -> int:
        """Apply a strong decision that retires rows (every node applies the same decisions in
        the same order; applying one twice changes nothing). Returns the rows retired here.

        Each row is frozen at the decision's state of it: the rights it still held there are
        re-issued by the decision's heir through its row :func:`heir_row` (a grant, passed on
        at once to the heir's own row), and later rights transferred to the retired row follow
        them there. Only a run of the heir that started by ``proposed_ms``, or that resumed its
        row from its log, re-issues: a later run does not know what an earlier one re-issued
        and passed to a row it no longer has (those rights then stay where they went).

        Any node that sees a retired row spend or transfer beyond its frozen state counts the
        excess in ``retired_overspent``: that happens only if its member was not dead, or came
        back with its data directory despite its removal.
        """
        retired = 0
        for row in retirement.rows:
            rule = rules(row.key)
            if rule is None:
                continue
            window = self._window_at(row.key, rule, row.window, now_ms)
            if window is None:
                continue  # a window no longer kept: nothing left to reclaim
            rows = self._retired.setdefault((row.key, row.window), {})
            if row.replica in rows:
                continue  # retired already: the first decision stands
            rows[row.replica] = (row, 0)
            if retirement.heir == self.node_id and (
                self._resumed or self.started_ms <= retirement.proposed_ms
            ):
                self._reissues.add(row.replica)
            retired += 1
            self._settle_retired(row.key, row.window, window)
        self.counters.rows_retired += retired
        if retired and retirement.member not in self._decisions:
            self._decisions[retirement.member] = retirement
            if self.durable:
                self._unlogged_decisions.append(retirement)
        return retired

    def _settle_retired(self, key: str, number: int, window: _Window) -> None:
        """Count a retired row's spending beyond its frozen state; as its heir, re-issue the
        rights it holds at that state (and those moved to it since)."""
        rows = self._retired.get((key, number))
        if not rows:
            return
        counter = window.counter
        for replica, (row, reported) in sorted(rows.items()):
            frozen = row.frozen
            used = counter.spent_by(replica) + counter.sent_by(replica)
            excess = used - frozen.spent_by(replica) - frozen.sent_by(replica)
            if excess > reported:
                self.counters.retired_overspent += excess - reported
                rows[replica] = (row, excess)
            if replica not in self._reissues:
                continue
            left = (
                frozen.granted_by(replica)
                + counter.received_by(replica)
                - frozen.sent_by(replica)
                - frozen.spent_by(replica)
            )
            heir = heir_row(replica)
            more = left - counter.granted_by(heir)
            if more <= 0:
                continue
            writer = counter.as_replica(heir)
            writer.grant(more)
            writer.transfer(writer.rights(heir), self.replica)
            counter.merge(writer)
            self.counters.rights_reclaimed += more
            self._changed(key, number, window)

    @staticmethod
    def _granted_by_members(counter: BoundedCounter) -> int:
        """The rights ``counter`` shows created, less those re-issued by heirs for retired rows
        (which the rows themselves can no longer spend). Every heir row is discounted, also on
        a node that has not applied the decision (one outside the Raft voters, or one whose
        log no longer holds it): only a decision makes an heir row."""
        return counter.granted - sum(
            counter.granted_by(row) for row in counter.writers() if row.endswith(HEIR_SUFFIX)
        )

    def fail_all(self, error: Exception) -> None:
        """Fail every waiting consumption and gathering with ``error`` (the node is shutting
        down)."""
        pending, self._pending = self._pending, []
        for waiting in pending:
            waiting.ticket.fail(error)
        gatherings, self._gatherings = self._gatherings, {}
        for gathering in gatherings.values():
            gathering.done(None, error)

    @property
    def outstanding(self) -> int:
        """Consumptions waiting for rights."""
        return len(self._pending)

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _index(rule: PolicyRule, now_ms: int) -> int:
        return now_ms // rule.window_ms

    def _window(self, key: str, rule: PolicyRule, now_ms: int) -> _Window:
        window = self._window_at(key, rule, self._index(rule, now_ms), now_ms)
        assert window is not None, "the open window is always kept"
        return window

    def _window_at(self, key: str, rule: PolicyRule, number: int, now_ms: int) -> _Window | None:
        """Window ``number`` of ``key`` (made, with this run's allocation if it may take it),
        or None outside the kept windows."""
        current = self._index(rule, now_ms)
        if not current - WINDOWS_KEPT < number <= current:
            return None
        window = self._windows.get((key, number))
        if window is None:
            counter = BoundedCounter(self.replica)
            if self.started_ms <= number * rule.window_ms:
                counter.grant(share_of(rule, self.node_id))
            window = _Window(counter, rule)
            self._add_window(key, number, window)
            self._changed(key, number, window)
        return window

    def _add_window(self, key: str, number: int, window: _Window) -> None:
        """Keep ``window``: in the rotation of re-sent windows, and until it is no longer
        kept (:meth:`_drop_old`)."""
        self._windows[(key, number)] = window
        self._recent[(key, number)] = self._round
        self._rotating.append((key, number))
        heapq.heappush(self._expiry, ((number + WINDOWS_KEPT) * window.rule.window_ms, key, number))

    def _try(self, pending: _Pending, now_ms: int) -> bool:
        """Consume for ``pending`` if this node holds the rights; completes its ticket."""
        window = self._window(pending.key, pending.rule, now_ms)
        if window.counter.rights(self.replica) < pending.amount:
            return False
        window.counter.consume(pending.amount)
        window.used += pending.amount
        number = self._index(pending.rule, now_ms)
        self._changed(pending.key, number, window)
        self._consumed_unpushed.add((pending.key, number))
        self._acknowledge(
            pending.ticket,
            Answer(
                pending.key,
                "counter",
                "bounded",
                "bounded",
                accepted=pending.amount,
                applied=True,
                value=window.counter.value,
            ),
        )
        return True

    def _serve(self, now_ms: int, monotonic_ms: int) -> None:
        """Serve waiting consumptions in order while rights last; refuse those past due."""
        waiting: list[_Pending] = []
        blocked: set[str] = set()  # keys served in order: one waiting blocks those after it
        for pending in self._pending:
            if pending.ticket.done:
                continue
            if pending.key not in blocked and self._try(pending, now_ms):
                self.counters.consumed_after_wait += 1
            elif monotonic_ms >= pending.deadline_ms:
                self.counters.refused_no_rights += 1
                pending.ticket.fail(
                    RefusedError(
                        f"{NO_RIGHTS}: {pending.amount} of {pending.key!r} could not be covered "
                        f"by this node's rights within {self.timeout_ms} ms"
                    )
                )
            else:
                waiting.append(pending)
                blocked.add(pending.key)
        self._pending = waiting

    def _unmet(self, key: str, window: _Window) -> int:
        """Rights the consumptions waiting on ``key`` lack."""
        wanted = sum(p.amount for p in self._pending if p.key == key and not p.ticket.done)
        return max(0, wanted - window.counter.rights(self.replica))

    def _ask(self, key: str, rule: PolicyRule, now_ms: int) -> None:
        """Ask the peers believed to hold the most rights for this node's shortfall."""
        number = self._index(rule, now_ms)
        window = self._window(key, rule, now_ms)
        unmet = self._unmet(key, window)
        peers = self._peers
        if not unmet or not peers:
            return
        held: dict[str, int] = dict.fromkeys(peers, 0)
        for replica, rights in window.counter.all_rights().items():
            owner = self._owners.get(replica)
            if owner in held and replica != self.replica:
                held[owner] += rights
        # Richest first; those this node knows nothing of come next, in a random order each
        # time, so an unknown donor is found even while the known ones are partitioned away.
        order = sorted(peers, key=lambda peer: (-held[peer], self._rng.random()))
        frame = wire.encode(wire.Tag.BOUNDED_REQUEST, [self.replica, [[key, number, unmet]]])
        for peer in order[: self.fanout]:
            self._send(peer, frame)
            self.counters.requests_sent += 1

    def _spare(self, key: str, window: _Window) -> int:
        held = window.counter.rights(self.replica)
        reserve = (held + 1) // 2 if window.used else 0
        return max(0, held - reserve - self._unmet(key, window))

    def _give(
        self,
        source: str,
        replica: str,
        key: str,
        rule: PolicyRule,
        number: int,
        amount: int,
        now_ms: int,
    ) -> None:
        """Transfer up to ``amount`` spare rights to ``replica`` (once per round per asker)."""
        if replica == self.replica or self._served.get((replica, key, number)) == self._round:
            return
        window = self._window(key, rule, now_ms)
        given = min(amount, self._spare(key, window))
        if given <= 0:
            return
        self._served[(replica, key, number)] = self._round
        window.counter.transfer(given, replica)
        self._changed(key, number, window)
        self.counters.transfers_given += 1
        self.counters.rights_given += given
        for frame in self._state_frames([(key, number, window)]):
            self._send(source, frame)

    def _answer_hint(
        self,
        source: str,
        replica: str,
        entry: StateEntry,
        rule: PolicyRule,
        window: _Window,
        now_ms: int,
    ) -> None:
        """Act on a peer's demand hints: cover its unmet demand, or pass rights this node
        does not use to a peer that uses the key and holds less than it used."""
        if entry.unmet:
            self._give(source, replica, entry.key, rule, entry.window, entry.unmet, now_ms)
            return
        if window.used or not entry.used:
            return
        if window.counter.rights(replica) < entry.used:
            spare = self._spare(entry.key, window)
            self._give(source, replica, entry.key, rule, entry.window, (spare + 1) // 2, now_ms)

    def _drop_old(self, now_ms: int) -> None:
        """Forget windows no longer kept (in the order they expire: no walk over the others),
        and who was served in rounds before the last."""
        expiry = self._expiry
        while expiry and expiry[0][0] <= now_ms:
            _, key, number = heapq.heappop(expiry)
            self._windows.pop((key, number), None)
            self._recent.pop((key, number), None)
        self._served = {
            served: round_number
            for served, round_number in self._served.items()
            if round_number >= self._round - 1
        }

    def _gossip_entries(self) -> list[tuple[str, int, _Window]]:
        """The windows changed in the last :data:`RECENT_ROUNDS` rounds, then the next
        :data:`ROTATING_KEYS_PER_ROUND` of the others in turn: a round costs what changed,
        not every window kept."""
        oldest = self._round - RECENT_ROUNDS
        for slot in [slot for slot, changed in self._recent.items() if changed < oldest]:
            del self._recent[slot]
        entries = [(key, number, self._windows[(key, number)]) for key, number in self._recent]
        rotating = self._rotating
        taken = 0
        for _ in range(len(rotating)):
            if taken == ROTATING_KEYS_PER_ROUND:
                break
            slot = rotating.popleft()
            window = self._windows.get(slot)
            if window is None:
                continue  # no longer kept: out of the rotation
            rotating.append(slot)
            if slot not in self._recent:
                entries.append((slot[0], slot[1], window))
                taken += 1
        return entries

    def _state_frames(self, entries: Sequence[tuple[str, int, _Window]]) -> list[bytes]:
        """``entries`` as ``BOUNDED_STATE`` frames under the frame budget."""
        frames: list[bytes] = []
        rows: list[list[Any]] = []
        size = 0
        for key, number, window in entries:
            row = [key, number, window.counter.to_bytes(), self._unmet(key, window), window.used]
            row_bytes = len(wire.encode(wire.Tag.BOUNDED_STATE, row))
            if rows and size + row_bytes > FRAME_BYTES_MAX:
                frames.append(wire.encode(wire.Tag.BOUNDED_STATE, [self.replica, rows]))
                rows, size = [], 0
            rows.append(row)
            size += row_bytes
        if rows:
            frames.append(wire.encode(wire.Tag.BOUNDED_STATE, [self.replica, rows]))
        return frames


@dataclass(frozen=True, slots=True)
class StateEntry:
    """One window of one key in a ``BOUNDED_STATE`` frame, with the sender's demand hints."""

    key: str
    window: int
    counter: BoundedCounter
    unmet: int
    used: int


@dataclass(frozen=True, slots=True)
class BoundedState:
    """``BOUNDED_STATE``: the sender's replica name and its state of some windows."""

    replica: str
    entries: list[StateEntry]


@dataclass(frozen=True, slots=True)
class BoundedRequest:
    """``BOUNDED_REQUEST``: the sender's replica lacks ``amount`` rights of ``(key, window)``."""

    replica: str
    entries: list[tuple[str, int, int]]


@dataclass(frozen=True, slots=True)
class RowsAsk:
    """``BOUNDED_ROWS_ASK [replica, [nonce, member]]``: send me your copy of ``member``'s
    rows (a node gathering them for a retirement)."""

    replica: str
    nonce: int
    member: str


@dataclass(frozen=True, slots=True)
class RowsAnswer:
    """``BOUNDED_ROWS [replica, [nonce, member, part, parts, rows]]``: part ``part`` of
    ``parts`` of the sender's copy of ``member``'s rows."""

    replica: str
    nonce: int
    member: str
    part: int
    parts: int
    rows: tuple[RetiredRow, ...]


@dataclass(frozen=True, slots=True)
class RetiredRow:
    """One row of one window of a key, and the state it is frozen at (its own slots)."""

    key: str
    window: int
    replica: str
    frozen: BoundedCounter

    @staticmethod
    def join(copies: Sequence[Sequence[RetiredRow]]) -> list[RetiredRow]:
        """The join of several nodes' copies of the same rows (each from :meth:`rows_of
        <BoundedKeys.rows_of>`): per row, the pointwise max of its slots."""
        joined: dict[tuple[str, int, str], BoundedCounter] = {}
        for copy in copies:
            for row in copy:
                slot = (row.key, row.window, row.replica)
                merged = joined.setdefault(slot, BoundedCounter("retirement"))
                merged.merge(row.frozen.row(row.replica))
        return [
            RetiredRow(key, number, replica, frozen)
            for (key, number, replica), frozen in sorted(joined.items(), key=lambda item: item[0])
        ]


@dataclass(frozen=True, slots=True)
class Retirement:
    """A strong decision: ``member`` (removed) has its ``rows`` retired, and ``heir`` (a live
    member) re-issues the rights they still hold. Frame ``BOUNDED_RETIREMENT [member, heir,
    proposed_ms, [[key, window, replica, frozen row as a counter frame], ...]]``."""

    member: str
    heir: str
    proposed_ms: int
    """The proposer's wall clock: only a run of the heir that started by then re-issues."""
    rows: tuple[RetiredRow, ...]

    def to_bytes(self) -> bytes:
        """The decision as one frame (what the strong log carries)."""
        rows = [[r.key, r.window, r.replica, r.frozen.to_bytes()] for r in self.rows]
        body = [self.member, self.heir, self.proposed_ms, rows]
        return wire.encode(wire.Tag.BOUNDED_RETIREMENT, body)


def decode_retirement(payload: bytes) -> Retirement:
    """Decode and check a ``BOUNDED_RETIREMENT`` frame; raises :class:`DecodeError` only."""
    return wire.decode_as(payload, wire.Tag.BOUNDED_RETIREMENT, _build_retirement)


def _build_retirement(body: Any) -> Retirement:
    if not isinstance(body, list) or len(body) != 4:
        raise ValueError("a retirement is [member, heir, proposed_ms, rows]")
    member, heir, proposed_ms, entries = body
    if not isinstance(entries, list):
        raise ValueError("a retirement's rows are a list")
    member = _text(member)
    rows = _retired_rows(member, entries)
    return Retirement(member, _text(heir), _natural(proposed_ms), rows)


def _retired_rows(member: str, entries: list[Any]) -> tuple[RetiredRow, ...]:
    """``[[key, window, replica, frozen row], ...]``, every row one of ``member``'s."""
    rows = []
    for entry in entries:
        if not isinstance(entry, list) or len(entry) != 4:
            raise ValueError("a retired row is [key, window, replica, frozen row]")
        key, number, replica, frozen = entry
        if not isinstance(frozen, bytes):
            raise TypeError("a retired row carries its frozen state as a frame")
        replica = _text(replica)
        if owner_of(replica) != member:
            raise ValueError(f"row {replica!r} is not a row of {member!r}")
        counter = BoundedCounter.from_bytes(frozen).row(replica)
        rows.append(RetiredRow(_text(key), _natural(number), replica, counter))
    return tuple(rows)


def decode_bounded(payload: bytes) -> BoundedState | BoundedRequest | RowsAsk | RowsAnswer:
    """Decode and check one ``BOUNDED_*`` frame; raises :class:`DecodeError` only."""
    tag, body = wire.decode(payload)
    if tag not in BOUNDED_TAGS:
        raise DecodeError(f"not a bounded frame: tag {tag}")
    if tag == wire.Tag.BOUNDED_STATE:
        return wire.build_checked(body, _build_state)
    if tag == wire.Tag.BOUNDED_REQUEST:
        return wire.build_checked(body, _build_ask)
    if tag == wire.Tag.BOUNDED_ROWS_ASK:
        return wire.build_checked(body, _build_rows_ask)
    return wire.build_checked(body, _build_rows_answer)


def _build_rows_ask(body: Any) -> RowsAsk:
    replica, rest = _head(body)
    if len(rest) != 2:
        raise ValueError("a rows ask is [nonce, member]")
    nonce, member = rest
    return RowsAsk(replica, _natural(nonce), _text(member))


def _build_rows_answer(body: Any) -> RowsAnswer:
    replica, rest = _head(body)
    if len(rest) != 5:
        raise ValueError("a rows answer is [nonce, member, part, parts, rows]")
    nonce, member, part, parts, entries = rest
    if not isinstance(entries, list):
        raise ValueError("a rows answer's rows are a list")
    member = _text(member)
    part, parts = _natural(part), _natural(parts)
    if not part < parts:
        raise ValueError(f"part {part} of {parts}")
    return RowsAnswer(replica, _natural(nonce), member, part, parts, _retired_rows(member, entries))


def _build_state(body: Any) -> BoundedState:
    replica, rows = _head(body)
    entries = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 5:
            raise ValueError("a bounded state entry is [key, window, counter, unmet, used]")
        key, number, counter_frame, unmet, used = row
        if not isinstance(counter_frame, bytes):
            raise TypeError("a bounded state entry carries its counter as a frame")
        counter = BoundedCounter.from_bytes(counter_frame)
        entries.append(
            StateEntry(_text(key), _natural(number), counter, _natural(unmet), _natural(used))
        )
    return BoundedState(replica, entries)


def _build_ask(body: Any) -> BoundedRequest:
    replica, rows = _head(body)
    entries = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 3:
            raise ValueError("a bounded request entry is [key, window, amount]")
        key, number, amount = row
        entries.append((_text(key), _natural(number), _natural(amount)))
    return BoundedRequest(replica, entries)


def _head(body: Any) -> tuple[str, list[Any]]:
    if not isinstance(body, list) or len(body) != 2:
        raise ValueError("a bounded frame is [replica, entries]")
    replica, rows = body
    if not isinstance(replica, str) or not replica or not isinstance(rows, list):
        raise ValueError("a bounded frame is [replica name, list of entries]")
    return replica, rows


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _natural(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"expected an integer >= 0, got {value!r}")
    return value
