"""The engine: one node's protocol state, and the one place where a key's mode decides how a
write or a read is served.

Rules of this file: pure (no clock, socket, file, thread or event loop). Time comes in with
:meth:`Engine.tick` (one clock reading per step; gossip rounds, quorum retries and deadlines and
Raft ticks are all derived from it here), received frames come in with the same call, and
everything to send leaves as data in :attr:`Engine.outbox`. Requests leave as
:class:`~crdtstream.engine.tickets.Ticket` objects that complete with one
:class:`~crdtstream.engine.tickets.Answer` type for every mode.

Routing by mode happens only here, from the policy (DESIGN.md section 2): a caller names a key,
an operation and a value, never a mode. It may ask for a weaker read (``consistency=``), never
write around the key's mode: a write to a ``strong`` key goes through Raft or is refused with a
:class:`~crdtstream.errors.RefusedError` saying why, whether it comes from the library, HTTP,
statsd or the bench.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from crdtstream import wire
from crdtstream.config import Mode, PolicyRule
from crdtstream.engine.bounded_mode import (
    BOUNDED_TAGS,
    RETIREMENTS_KEY,
    BoundedKeys,
    RetiredRow,
    Retirement,
    decode_retirement,
)
from crdtstream.engine.claims import CLAIMS_KEY, ClaimedKey, QuorumClaims
from crdtstream.engine.config import EngineConfig
from crdtstream.engine.counters import EngineCounters, IngestCounters
from crdtstream.engine.operations import (
    Operation,
    check_applied,
    check_local,
    kind_for,
    operation_named,
    served_consistency,
    strong_answer,
)
from crdtstream.engine.paxos_mode import PaxosReplica
from crdtstream.engine.quorum import QUORUM_TAGS, Quorum
from crdtstream.engine.requests import Completion, ReadAnswer
from crdtstream.engine.sessions import ClientSession
from crdtstream.engine.statsd import without_future_rows, without_keys
from crdtstream.engine.strong import StrongReplica
from crdtstream.engine.strong_client import StrongClient
from crdtstream.engine.tickets import Answer, Ticket
from crdtstream.errors import (
    DecodeError,
    InvalidValueError,
    KindConflictError,
    RefusedError,
    UnavailableError,
)
from crdtstream.gossip.catalog import Catalog
from crdtstream.gossip.core import GossipCore
from crdtstream.gossip.messages import GOSSIP_TAGS, Outgoing
from crdtstream.ingest import StatsdParser
from crdtstream.paxos.storage import AcceptorStorage, MemoryAcceptorStorage
from crdtstream.paxos.value import read_view
from crdtstream.policy import RESERVED_PREFIX, Policy
from crdtstream.raft.commands import CLAIMS_HELD, decode_command, request_digest
from crdtstream.raft.state_machine import IDEMPOTENCY_REUSED, Command, Result
from crdtstream.raft.storage import DurableStorage, MemoryStorage
from crdtstream.window.delta import StoreDelta
from crdtstream.window.store import WindowStore

if TYPE_CHECKING:
    from crdtstream.transport import Packet

__all__ = ["Engine"]

_REFUSALS: Final = {"strong": 1, "bounded": 2}
"""Modes whose writes statsd cannot carry (they need an answer), by refusal code."""
_RESERVED: Final = 3
"""The refusal code of the agent's reserved keys."""
_REFUSAL_CODES: Final = 4
"""Refusal codes, 0 (kept) included."""

STRONG_TAGS: Final = frozenset(
    (wire.Tag.RAFT_MESSAGE, wire.Tag.STRONG_REQUEST, wire.Tag.STRONG_RESPONSE)
)

SHUTTING_DOWN = "the node is shutting down"

_SCALARS = (int, float, str, bytes)


class Engine:
    """One node's store, gossip, quorum and strong cores behind one write/read API."""

    def __init__(
        self,
        config: EngineConfig,
        replica: str,
        store: WindowStore,
        rng: random.Random,
        *,
        now_ms: int,
        monotonic_ms: int,
        raft_storage: DurableStorage | None = None,
        send_now: Callable[[], None] | None = None,
        paxos_storage: AcceptorStorage | None = None,
        bounded_records: Sequence[bytes] = (),
    ) -> None:
        """Start at the clock reading ``now_ms`` / ``monotonic_ms``; ``store`` may be restored
        from a snapshot; ``raft_storage`` holds this node's Raft log when it is a voter (a
        :class:`MemoryStorage` when not given). ``send_now``, when given, is called when the
        outbox should leave before the step ends: a Raft leader's appends, just before it
        syncs its own log, so that the followers' fsyncs run during its own. ``paxos_storage``
        holds this node's Paxos acceptor records (in memory when not given); Paxos runs when a
        policy rule names ``backend = "paxos"`` and Raft voters (its acceptors) are configured.
        ``bounded_records`` are the logged bounded state of this node's previous run (see
        :meth:`BoundedKeys.resume <crdtstream.engine.bounded_mode.BoundedKeys.resume>`; a bad
        one raises :class:`DecodeError`); resumed only when ``config.log_writes``.
        """
        self._send_now = send_now
        self.config = config
        self.replica = replica
        self.store = store
        # Before any write: a node that comes back must not take writes to windows its clock
        # has closed, which the others may have called final meanwhile.
        store.advance(now_ms)
        self.policy = Policy(config.policy)
        # Its own memory of keys: a known key costs the parser no string work.
        self.statsd = StatsdParser()
        self.catalog = Catalog(replica, rng)
        self.catalog.set_rules(config.policy)
        self.gossip: GossipCore[StoreDelta] = GossipCore(
            config.node_id,
            config.listen_address,
            replica,
            store,
            StoreDelta.from_bytes,
            rng=rng,
            gossip=config.gossip,
            membership=config.membership,
            window=config.window,
            seeds=list(config.seeds),
            catalog=self.catalog,
            rules_fingerprint=self.policy.fingerprint,
        )
        for kind, keys in store.kind_keys.items():
            self.catalog.declare_many(keys, kind)
        self.outbox: list[Outgoing] = []
        """Frames to send, in order; the driver takes them with :meth:`take_outbox`."""
        self.counters = EngineCounters()
        self.ingest_counters = IngestCounters()
        self.ingest_errors: dict[str, int] = {}
        self.strong = self._open_strong(rng, raft_storage)
        self.paxos = self._open_paxos(rng, paxos_storage, monotonic_ms)
        self.session = ClientSession(replica, rng)
        # Request ids start at random per run: an answer to an earlier run cannot confirm one.
        self.quorum = Quorum(store, self._send, first_id=rng.getrandbits(62))
        self.claims = QuorumClaims(
            replica,
            store,
            self.session,
            self._submit_claim,
            self._confirm,
            self._acknowledge,
            self._claims_held,
            # A node outside the voters asks the table; only a logging node takes claims.
            self._query_claims_held
            if isinstance(self.strong, StrongClient) and config.log_writes
            else None,
        )
        self.bounded = BoundedKeys(
            config.node_id,
            replica,
            rng,
            self._send,
            started_ms=now_ms,
            timeout_ms=config.bounded_timeout_ms,
            fanout=config.gossip.fanout,
            round_ms=config.gossip.interval_ms,
            durable=config.log_writes,
        )
        self._bounded_declared: set[str] = set()
        if config.log_writes and bounded_records:
            self.bounded.resume(bounded_records, self._bounded_rule_or_none, now_ms)
            for key in self.bounded.key_names():
                self._declare_bounded(key)
        if isinstance(self.strong, StrongReplica):
            # Retirements committed before the Raft snapshot this voter restored, then those
            # applied from its log (in the log's order).
            self._apply_retirements_held(now_ms)
            self.strong.watch = (RETIREMENTS_KEY.encode(), self._on_retirement_command)
            self.strong.on_restore = self._on_strong_restore
        self._now_ms = now_ms
        self._monotonic_ms = monotonic_ms
        self._started_ms = monotonic_ms
        self._raft_ticks_done = 0
        # Eventual and quorum writes applied (and, for quorum, confirmed) whose answer waits
        # for the driver to log the store's changes durably (config.log_writes).
        self._awaiting_log: list[tuple[Ticket, Answer]] = []
        self.next_gossip_ms = 0
        """The monotonic time of the next gossip round."""
        self._closed = False

    # ------------------------------------------------------------------ writes

    def write(
        self,
        key: str,
        op: str,
        value: float | int | str | bytes,
        *,
        kind: str | None = None,
        timestamp_ms: int | None = None,
        idempotency_key: str | None = None,
        limit: float | int | None = None,
        weight: float = 1.0,
        relative: bool = False,
        now_ms: int | None = None,
    ) -> Ticket:
        """Write ``value`` to ``key`` with operation ``op`` (a key of :data:`OPERATIONS`), as
        the key's mode says: applied here and gossiped (eventual), confirmed by a majority
        (quorum), or committed through Raft (strong).

        ``kind`` names the kind of a new key when the operation's default does not fit (say
        ``distinct`` for ``insert``). ``timestamp_ms`` is the event time (default: now, which is
        ``now_ms`` or else the time of the last :meth:`tick`). ``idempotency_key`` makes a
        retried strong or quorum write apply at most once, whichever node takes the retry (see
        :mod:`crdtstream.engine.claims` for quorum keys; refused for eventual and bounded ones);
        ``limit`` bounds a ``conditional_add``.
        ``weight`` and ``relative`` are those of :meth:`WindowStore.add` (eventual and quorum).
        The ticket fails with :class:`InvalidValueError`, :class:`KindConflictError`,
        :class:`RefusedError` or :class:`UnavailableError`.
        """
        ticket = Ticket()
        mode = self.policy.mode_of(key)
        try:
            if mode == "bounded":
                if self._closed:
                    raise UnavailableError(SHUTTING_DOWN)
                if idempotency_key is not None:
                    # A retry would spend the rights twice: refused, not silently ignored.
                    raise RefusedError(
                        f"idempotency keys are kept for strong keys only; {key!r} is bounded"
                    )
                rule = self._bounded_rule(key)
                now = self._now_ms if now_ms is None else now_ms
                monotonic = self._monotonic_ms
                self.bounded.write(ticket, key, rule, op, value, limit, now, monotonic)
                self._declare_bounded(key)
                return ticket
            operation = operation_named(op)
            if not isinstance(value, _SCALARS):
                # A JSON array or object would reach the store's columns as a shaped array.
                raise InvalidValueError(f"a value is a number or a string, got {value!r}")
            stamp = self._event_time(timestamp_ms, now_ms)
            if mode == "strong":
                command = self._command_for(
                    key, op, operation, value, kind, stamp, timestamp_ms, idempotency_key, limit
                )
                self._submit(ticket, command)
            else:
                check_local(key, mode, op, operation, limit)
                kind = kind_for(key, op, operation, kind, self.store.kind_of(key))
                if idempotency_key is None:
                    self._write_here(ticket, key, mode, op, value, kind, stamp, weight, relative)
                    return ticket

                def apply() -> tuple[int, Answer]:
                    return self._apply_here(key, mode, op, value, kind, stamp, weight, relative)

                self._check_claimable(key, mode)
                digest = request_digest(key, kind, op, value, None, timestamp_ms)
                claim = ClaimedKey(key, kind, idempotency_key, digest)
                self.claims.write(ticket, claim, apply, self._now_ms)
        except (InvalidValueError, KindConflictError, RefusedError, UnavailableError) as error:
            ticket.fail(error)
        return ticket

    def _declare_bounded(self, key: str) -> None:
        """Put a bounded key into the key catalog (as a counter: its value is what was spent)
        the first time this run writes it, so the key listing shows it like any other key."""
        if key not in self._bounded_declared:
            self._bounded_declared.add(key)
            self.catalog.declare_many([key], "counter")

    def _bounded_rule(self, key: str) -> PolicyRule:
        rule = self._bounded_rule_or_none(key)
        assert rule is not None, "a key routed as bounded has a bounded rule"
        return rule

    def _bounded_rule_or_none(self, key: str) -> PolicyRule | None:
        rule = self.policy.rule_of(key)
        return rule if rule is not None and rule.mode == "bounded" else None

    def _write_here(
        self,
        ticket: Ticket,
        key: str,
        mode: Mode,
        op: str,
        value: float | int | str | bytes,
        kind: str,
        stamp: int,
        weight: float,
        relative: bool,
    ) -> None:
        """Apply an eventual or quorum write here; a quorum one completes once confirmed."""
        version, answer = self._apply_here(key, mode, op, value, kind, stamp, weight, relative)
        if mode == "quorum":
            self._replicate_since(version, ticket, answer)
        else:
            self._acknowledge(ticket, answer)

    def _apply_here(
        self,
        key: str,
        mode: Mode,
        op: str,
        value: float | int | str | bytes,
        kind: str,
        stamp: int,
        weight: float,
        relative: bool,
    ) -> tuple[int, Answer]:
        """Apply a write to the store: the store version before it, and its answer."""
        version = self.store.version
        if op == "remove":
            try:
                removed = self.store.remove(key, value, stamp)  # type: ignore[arg-type]
            except (TypeError, ValueError) as error:
                raise InvalidValueError(str(error)) from error
            answer = Answer(key, kind, mode, mode, removed=removed)
        else:
            if key not in self.store.keys:  # a new key: into the replicated catalog
                self.catalog.declare_many([key], kind)
            try:
                result = self.store.add(key, kind, value, stamp, weight=weight, relative=relative)
            except (TypeError, ValueError, OverflowError) as error:
                raise InvalidValueError(str(error)) from error
            check_applied(result, key, kind, value)
            answer = Answer(key, kind, mode, mode, accepted=result.accepted)
        return version, answer

    def _check_claimable(self, key: str, mode: Mode) -> None:
        """Refuse an idempotency key where a claim cannot make the write happen once."""
        if mode != "quorum":
            # A retry at another node would write another replica's slot and count twice.
            raise RefusedError(
                f"idempotency keys are kept for strong and quorum keys; {key!r} is {mode}"
            )
        if self.strong is None:
            raise RefusedError(
                f"an idempotency key on quorum key {key!r} is claimed through Raft, but this "
                "node has no Raft voters configured (node.raft_voters)"
            )
        if not self.config.log_writes:
            raise RefusedError(
                f"an idempotency key on quorum key {key!r} needs the local write-ahead log (a "
                "data directory with durability fsync): only it tells, after a crash, whether "
                "this node applied the write it claimed"
            )
        if self._closed:
            raise UnavailableError(SHUTTING_DOWN)

    def _claims_held(self) -> list[tuple[str, str]]:
        """The quorum idempotency keys this replica claimed and has not settled (known to a
        Raft voter, which holds the replicated table)."""
        if isinstance(self.strong, StrongReplica):
            return self.strong.machine.claims_held_by(self.replica)
        return []

    def _query_claims_held(self, done: Completion) -> None:
        """Ask the replicated table through Raft for this replica's claims (a node outside
        the voters, which has no copy of the table)."""
        if self.strong is None:
            return  # no Raft: no claims either
        command = self.session.command(
            CLAIMS_KEY, "counter", CLAIMS_HELD, self.replica, None, self._now_ms, None, None
        )
        self.strong.submit(command, self._timeout_ticks(), done)

    def _submit_claim(self, command: Command, done: Completion) -> None:
        """Replicate a claim or settle command through Raft."""
        self._strong_for(command.key, "write").submit(command, self._timeout_ticks(), done)

    def _confirm(self, what: int | str, done: Callable[[Exception | None], None]) -> None:
        """Confirm at a majority the store's changes since version ``what``, or key ``what``'s
        whole state."""
        if self._closed:
            done(UnavailableError(SHUTTING_DOWN))
            return
        peers, cluster_size = self.quorum_members()
        timeout_ms = self.config.quorum_timeout_ms
        self.quorum.write(what, peers, cluster_size, self._monotonic_ms, timeout_ms, done)

    def _acknowledge(self, ticket: Ticket, answer: Answer) -> None:
        """Complete a write now, or once the driver logged it when ``config.log_writes``."""
        if self.config.log_writes:
            self._awaiting_log.append((ticket, answer))
        else:
            ticket.complete(answer)

    @property
    def writes_awaiting_log(self) -> int:
        """Writes whose answer waits for :meth:`logged` (bounded consumptions included)."""
        return len(self._awaiting_log) + self.bounded.awaiting_log

    def logged(self) -> None:
        """The driver made every change of the store so far durable: answer the writes that
        waited for it (group commit: one sync answers all of them)."""
        waiting, self._awaiting_log = self._awaiting_log, []
        for ticket, answer in waiting:
            ticket.complete(answer)
        self.bounded.logged()

    def _replicate_since(self, version: int, ticket: Ticket, answer: Answer) -> None:
        """Complete ``ticket`` once a majority holds the store's changes since ``version``."""
        if self._closed:
            ticket.fail(UnavailableError(SHUTTING_DOWN))
            return
        if self.store.version == version:
            ticket.complete(answer)  # nothing changed: nothing to confirm
            return

        def done(error: Exception | None) -> None:
            if error is None:
                # The members logged it before acknowledging; so did this node before the
                # request left (a one-node cluster confirms at once: it waits for the log).
                self._acknowledge(ticket, answer)
            else:
                # Applied here and still spread by gossip: only the majority is unconfirmed.
                ticket.fail(UnavailableError(f"{error}; the write was kept on this node"))

        peers, cluster_size = self.quorum_members()
        self.quorum.write(
            version, peers, cluster_size, self._monotonic_ms, self.config.quorum_timeout_ms, done
        )

    def _command_for(
        self,
        key: str,
        op: str,
        operation: Operation,
        value: float | int | str | bytes,
        kind: str | None,
        stamp: int,
        timestamp_ms: int | None,
        idempotency_key: str | None,
        limit: float | int | None,
    ) -> Command:
        """The Raft command of a strong write (refused when no Raft voter is configured)."""
        self._strong_for(key, "write")
        kind = kind or operation.new_kind
        if kind not in operation.kinds:
            raise InvalidValueError(f"{op!r} applies to {list(operation.kinds)}, not to {kind!r}")
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return self.session.command(
            key, kind, operation.replicated_name, value, limit, stamp, timestamp_ms, idempotency_key
        )

    def _submit(self, ticket: Ticket, command: Command) -> None:
        """Replicate ``command``; ``ticket`` completes once it is applied, or fails."""
        key, kind = command.key, command.kind

        def done(result: Result | ReadAnswer | None, error: Exception | None) -> None:
            if error is not None:
                ticket.fail(error)
                return
            assert isinstance(result, Result)
            if not result.ok:
                ticket.fail(RefusedError(result.error or "refused by the state machine"))
                return
            ticket.complete(
                Answer(
                    key,
                    kind,
                    "strong",
                    "strong",
                    accepted=int(result.applied),
                    applied=result.applied,
                    value=result.value,
                )
            )

        if self._closed:
            ticket.fail(UnavailableError(SHUTTING_DOWN))
            return
        paxos = self._paxos_for(key)
        if paxos is not None:
            paxos.submit(command, self.config.strong_timeout_ms, done)
            return
        self._strong_for(key, "write").submit(command, self._timeout_ticks(), done)

    def _paxos_for(self, key: str) -> PaxosReplica | None:
        """The Paxos replica when ``key`` is a strong key of the Paxos backend."""
        if self.paxos is None or self.policy.backend_of(key) != "paxos":
            return None
        return self.paxos

    def _strong_for(self, key: str, what: str) -> StrongReplica | StrongClient:
        if self.strong is None:
            raise RefusedError(
                f"{key!r} is a strong key and strong {what}s go through Raft, but this node "
                "has no Raft voters configured (node.raft_voters)"
            )
        return self.strong

    def _event_time(self, timestamp_ms: int | None, now_ms: int | None) -> int:
        """The event time of a write: now, or ``timestamp_ms`` if not too far ahead.

        One far-future event would move the watermark (or a strong key's replicated watermark)
        past every real window and make all later writes late: refused here, at the edge.
        """
        now = self._now_ms if now_ms is None else now_ms
        if timestamp_ms is None:
            return now
        if type(timestamp_ms) is not int:
            raise InvalidValueError(f"timestamp_ms must be an integer, got {timestamp_ms!r}")
        if timestamp_ms > now + self.config.event_time_future_ms_max:
            raise InvalidValueError(
                f"timestamp_ms {timestamp_ms} is more than "
                f"{self.config.event_time_future_ms_max} ms ahead of this node's clock"
            )
        return timestamp_ms

    def _declare(self, kind: str, key_names: Sequence[str]) -> None:
        """Put keys this node has not seen before into the replicated key catalog."""
        unknown = self.store.keys.unknown(key_names)
        if unknown:
            self.catalog.declare_many(unknown, kind)

    # ------------------------------------------------------------------ reads

    def read(self, key: str, *, consistency: str | None = None) -> Ticket:
        """Every retained window of ``key`` with its value and finality, served with the key's
        mode or the weaker ``consistency`` asked for.

        An eventual read answers from this node; a quorum read after merging the key's state
        from a majority (so it sees every write a majority confirmed); a strong read through
        Raft's ReadIndex. A strong key read at ``eventual`` answers from this voter's applied
        state (a node outside the voter set holds none, and refuses). A read stronger than the
        key's mode is refused, except a quorum read of an eventual key (the same data, merged).
        """
        ticket = Ticket()
        mode = self.policy.mode_of(key)
        try:
            if mode == "bounded":
                if consistency not in (None, "bounded", "eventual"):
                    raise RefusedError(f"{key!r} is bounded: it serves bounded or eventual reads")
                rule = self._bounded_rule(key)
                ticket.complete(self.bounded.read(key, rule, self._now_ms))
                return ticket
            served = served_consistency(key, mode, consistency)
            if mode == "strong":
                self._read_strong(ticket, key, served)
            elif served == "quorum":
                self._read_quorum(ticket, key, mode)
            else:
                ticket.complete(self._local_answer(key, mode, "eventual"))
        except (InvalidValueError, RefusedError) as error:
            ticket.fail(error)
        return ticket

    def _read_strong(self, ticket: Ticket, key: str, served: Mode) -> None:
        strong = self._strong_for(key, "read")
        paxos = self._paxos_for(key)
        if paxos is not None and served == "eventual":
            # What this node's acceptor accepted last: possibly stale, never a value that no
            # proposer computed.
            value = paxos.node.acceptor.record(key).value
            ticket.complete(strong_answer(key, read_view(self.config.window, key, value), served))
            return
        if served == "eventual":
            if not isinstance(strong, StrongReplica):
                raise RefusedError(
                    f"{key!r} is strong and this node is not a Raft voter: it holds no copy to "
                    "read at eventual consistency"
                )
            ticket.complete(strong_answer(key, strong.machine.read(key), "eventual"))
            return

        def done(view: Result | ReadAnswer | None, error: Exception | None) -> None:
            if error is not None:
                ticket.fail(error)
            else:
                assert not isinstance(view, Result)
                ticket.complete(strong_answer(key, view, "strong"))

        if self._closed:
            ticket.fail(UnavailableError(SHUTTING_DOWN))
            return
        if paxos is not None:
            paxos.read(key, self.config.strong_timeout_ms, done)
            return
        strong.read(key, self._timeout_ticks(), done)

    def _read_quorum(self, ticket: Ticket, key: str, mode: Mode) -> None:
        if self._closed:
            ticket.fail(UnavailableError(SHUTTING_DOWN))
            return

        def done(error: Exception | None) -> None:
            if error is None:
                ticket.complete(self._local_answer(key, mode, "quorum"))
            else:
                ticket.fail(error)

        peers, cluster_size = self.quorum_members()
        self.quorum.read(
            key, peers, cluster_size, self._monotonic_ms, self.config.quorum_timeout_ms, done
        )

    def _local_answer(self, key: str, mode: Mode, served: Mode) -> Answer:
        windows = tuple(
            dataclasses.replace(value, final=self.gossip.is_final(value.start_ms, value.end_ms))
            for value in self.store.read_key(key)
        )
        return Answer(key, self.store.kind_of(key), mode, served, windows=windows)

    def mode_of(self, key: str) -> Mode:
        """The consistency mode of ``key`` under the policy."""
        return self.policy.mode_of(key)

    # ------------------------------------------------------------------ statsd

    def ingest_statsd(
        self, data: bytes | Sequence[bytes], *, now_ms: int | None = None
    ) -> dict[str, object]:
        """Parse statsd/DogStatsD datagrams and apply them; returns what was accepted/rejected.

        statsd has no acknowledgement, so it cannot carry a strong key's writes (acknowledged
        after Raft commit) nor a bounded key's (a consumption may be refused for want of
        rights): their lines are refused and counted (``strong_refused``, ``bounded_refused``),
        never applied to the eventual store where those modes' reads would not see them. Lines
        for the agent's reserved keys (:data:`~crdtstream.policy.RESERVED_PREFIX`) are refused
        and counted too (``reserved_refused``).
        """
        now = self._now_ms if now_ms is None else now_ms
        parsed = self.statsd.parse(data, now)
        counts = self.ingest_counters
        counts.lines_ok += parsed.lines_ok
        counts.lines_rejected += parsed.lines_rejected
        for reason, count in parsed.errors.items():
            self.ingest_errors[reason] = self.ingest_errors.get(reason, 0) + count
        accepted = late = conflicts = future = strong = bounded = reserved = 0
        horizon_ms = now + self.config.event_time_future_ms_max
        for kind, parsed_batch in parsed.batches.items():
            batch, dropped = without_future_rows(parsed_batch, horizon_ms)
            future += dropped
            batch, refused = without_keys(batch, self._statsd_refusal, _REFUSAL_CODES)
            reserved += int(refused[_RESERVED])
            strong += int(refused[_REFUSALS["strong"]])
            bounded += int(refused[_REFUSALS["bounded"]])
            self._declare(kind, batch.key_names)
            result = self.store.ingest_batch(kind, batch)
            accepted += result.accepted
            late += result.late
            conflicts += result.rejected
        counts.events_accepted += accepted
        counts.events_late += late
        counts.events_kind_conflict += conflicts
        self.counters.events_future_rejected += future
        self.counters.events_strong_refused += strong
        self.counters.events_bounded_refused += bounded
        self.counters.events_reserved_refused += reserved
        return {
            "accepted": accepted,
            "rejected": parsed.lines_rejected,
            "late": late,
            "kind_conflicts": conflicts,
            "future_rejected": future,
            "strong_refused": strong,
            "bounded_refused": bounded,
            "reserved_refused": reserved,
            "errors": dict(parsed.errors),
        }

    def _statsd_refusal(self, key: str) -> int:
        """Why statsd may not write ``key`` (an index of :data:`_REFUSALS`), 0 when it may."""
        if key.startswith(RESERVED_PREFIX):
            return _RESERVED
        return _REFUSALS.get(self.policy.mode_of(key), 0) if self.policy.rules else 0

    # ------------------------------------------------------------------ time and frames

    def tick(self, now_ms: int, monotonic_ms: int, received: Sequence[Packet] = ()) -> None:
        """One step at one clock reading: handle ``received`` frames, then run what is due
        (gossip rounds, quorum retries and deadlines, Raft ticks) and the Raft Ready loop."""
        self._now_ms, self._monotonic_ms = now_ms, monotonic_ms
        self.store.advance(now_ms)
        for packet in received:
            self._route(packet.source_id, packet.payload)
        if monotonic_ms >= self.next_gossip_ms:
            self.next_gossip_ms = monotonic_ms + self.config.tick_interval_ms
            self.outbox.extend(self.gossip.tick(now_ms))
        self.quorum.tick(monotonic_ms)
        self.claims.tick(monotonic_ms)
        self.quorum.flush(monotonic_ms)
        self.bounded.tick(now_ms, monotonic_ms, self.gossip.membership.live_peers())
        if self.strong is not None:
            due = (monotonic_ms - self._started_ms) // self.config.raft.tick_ms
            while self._raft_ticks_done < due:
                self._raft_ticks_done += 1
                self.strong.tick()
            self.strong.process_ready()
        if self.paxos is not None:
            self.paxos.tick(monotonic_ms)
            self.paxos.process_ready()

    def flush(self) -> None:
        """Send the quorum requests made since the last step now, as one batch, rather than at
        the next :meth:`tick` (the driver calls it at the end of an event-loop turn)."""
        if not self._closed:
            self.quorum.flush(self._monotonic_ms)
            if self.paxos is not None:
                self.paxos.process_ready()  # a request's PREPAREs leave with this turn

    def _route(self, source: str, payload: bytes) -> None:
        self.counters.packets_received += 1
        try:
            tag = wire.peek_tag(payload)
        except DecodeError:
            self.counters.packets_malformed += 1
            return
        if tag in GOSSIP_TAGS:
            self.outbox.extend(self.gossip.step(source, payload, self._now_ms))
        elif tag in STRONG_TAGS and self.strong is not None:
            self.strong.step(source, payload)
        elif tag in QUORUM_TAGS:
            self.quorum.step(source, payload)
        elif tag in BOUNDED_TAGS:
            rules = self._bounded_rule_or_none
            self.bounded.step(source, payload, rules, self._now_ms, self._monotonic_ms)
        elif tag == wire.Tag.PAXOS_MESSAGE and self.paxos is not None:
            self.paxos.step(source, payload)
        else:
            self.counters.packets_unroutable += 1

    def _send(self, peer_id: str, payload: bytes) -> None:
        self.outbox.append(Outgoing(peer_id, payload))

    def take_outbox(self) -> list[Outgoing]:
        """The frames to send since the last call, in order."""
        outbox, self.outbox = self.outbox, []
        return outbox

    def quorum_members(self) -> tuple[list[str], int]:
        """The other members a quorum request goes to, and the cluster size its majority is
        counted against: seeds and every member gossip knows of, except those that left or were
        removed (a member believed dead still counts, so a minority never calls itself a
        majority), and at least ``quorum_cluster_size`` when configured."""
        others = set(self.config.seeds)
        for node_id, member in self.gossip.membership.members.items():
            if member.status in ("left", "removed"):
                others.discard(node_id)
            else:
                others.add(node_id)
        others.discard(self.config.node_id)
        return sorted(others), max(len(others) + 1, self.config.quorum_cluster_size)

    def _timeout_ticks(self) -> int:
        return max(1, self.config.strong_timeout_ms // self.config.raft.tick_ms)

    def _open_strong(
        self, rng: random.Random, storage: DurableStorage | None
    ) -> StrongReplica | StrongClient | None:
        voters = sorted(self.config.raft_voters)
        if not voters:
            return None
        if self.config.node_id not in voters:
            return StrongClient(voters, rng, self._send)
        durable = MemoryStorage(voters) if storage is None else storage
        return StrongReplica(
            self.config.node_id,
            durable,
            self.config.raft,
            self.config.window,
            rng,
            self._send,
            self._send_now,
        )

    def _open_paxos(
        self, rng: random.Random, storage: AcceptorStorage | None, monotonic_ms: int
    ) -> PaxosReplica | None:
        acceptors = sorted(self.config.raft_voters)
        if not acceptors or not any(rule.backend == "paxos" for rule in self.policy.rules):
            return None
        return PaxosReplica(
            self.config.node_id,
            acceptors,
            MemoryAcceptorStorage() if storage is None else storage,
            self.config.window,
            rng,
            self._send,
            monotonic_ms=monotonic_ms,
        )

    def remove_member(self, node_id: str, *, force: bool = False) -> bool:
        """An operator's removal of ``node_id``, a member gone for good (with its data): its
        replica no longer holds windows back from going final, on every node (the verdict
        spreads by gossip), and it may only come back with a wiped data directory.

        Only a member this node believes dead or left is removed, unless ``force``: removing
        one that is merely paused or partitioned would let a final value change. Raises
        :class:`RefusedError` for this node itself, an unknown member, or a live one without
        ``force``; returns False when it was removed already.
        """
        if node_id == self.config.node_id:
            raise RefusedError("a node cannot remove itself; remove it from another node")
        member = self.gossip.membership.members.get(node_id)
        if member is None:
            raise RefusedError(f"unknown member {node_id!r}")
        if member.status in ("alive", "suspect") and not force:
            raise RefusedError(
                f"member {node_id!r} is {member.status}: only a dead or departed member is "
                "removed (force it only if that node is gone for good)"
            )
        return self.gossip.remove_member(node_id, self._now_ms)

    def bounded_retirement(
        self, member: str, copies: Sequence[Sequence[RetiredRow]] = ()
    ) -> Retirement:
        """The decision that retires the bounded rows of ``member``, to be proposed through the
        strong log: its rows frozen at the join of this node's copy and ``copies`` (the other
        live nodes' copies, from
        :meth:`BoundedKeys.rows_of <crdtstream.engine.bounded_mode.BoundedKeys.rows_of>`), and
        the lowest-id live Raft voter as the heir (a voter applies the decision from its log;
        without voters, the lowest-id live node, for a decision applied by other means).
        Raises :class:`RefusedError` unless ``member`` was removed (:meth:`remove_member`): a
        member that may still spend must not have its rows retired; and
        :class:`UnavailableError` when no Raft voter is live."""
        self._check_retirable(member)
        live = {self.config.node_id, *self.gossip.membership.live_peers()}
        voters = self.config.raft_voters
        heirs = sorted(live.intersection(voters) if voters else live)
        if not heirs:
            raise UnavailableError("no Raft voter is live to re-issue the retired rights")
        rows = RetiredRow.join([self.bounded.rows_of(member), *copies])
        return Retirement(member, heirs[0], self._now_ms, tuple(rows))

    def _check_retirable(self, member: str) -> None:
        """Refuse to retire the rows of a member that is not removed, or while another member
        is dead without being removed (it may hold the newest copy of the rows, and come
        back)."""
        members = self.gossip.membership.members
        status = members.get(member)
        if status is None or status.status != "removed":
            raise RefusedError(
                f"member {member!r} is not removed: remove it before retiring its bounded rows"
            )
        dead = sorted(
            node_id
            for node_id, other in members.items()
            if node_id != member and other.status == "dead"
        )
        if dead:
            raise RefusedError(
                f"members {dead} are dead and may hold the newest copy of {member!r}'s rows: "
                "bring them back, or remove them, before retiring its bounded rows"
            )

    def apply_bounded_retirement(self, decision: bytes) -> int:
        """Apply a committed ``BOUNDED_RETIREMENT`` decision (every node, in the strong log's
        order); returns the rows retired here. Raises :class:`DecodeError` for a bad frame."""
        retirement = decode_retirement(decision)
        return self.bounded.retire(retirement, self._bounded_rule_or_none, self._now_ms)

    def retire_bounded_member(self, member: str) -> Ticket:
        """Retire ``member``'s bounded rows: gather every live node's copy of them
        (:meth:`BoundedKeys.gather_rows
        <crdtstream.engine.bounded_mode.BoundedKeys.gather_rows>`), then propose the decision
        (:meth:`bounded_retirement`) through the Raft log as an item of the strong set
        :data:`RETIREMENTS_KEY`; every voter applies it when it commits, in the log's order.
        One decision per member commits: the command carries an idempotency key naming the
        member, so a second one (a retry, or another node's) is refused by the state machine.

        The ticket completes once the decision is committed (its ``value``: the rows retired),
        or fails: :class:`RefusedError` without Raft voters, for a member not removed, while
        another member is dead, with no row of the member known at any live node, or when its
        rows were retired already; :class:`UnavailableError` when a live node's copy did not
        come within ``strong_timeout_ms``, or the decision could not commit in time."""
        ticket = Ticket()
        try:
            if self.strong is None:
                raise RefusedError(
                    "retiring bounded rows is a strong decision: it needs Raft voters "
                    "(node.raft_voters)"
                )
            self._check_retirable(member)
        except RefusedError as error:
            ticket.fail(error)
            return ticket
        if self._closed:
            ticket.fail(UnavailableError(SHUTTING_DOWN))
            return ticket

        def gathered(rows: list[RetiredRow] | None, error: Exception | None) -> None:
            if error is not None:
                ticket.fail(error)
            else:
                assert rows is not None
                self._propose_retirement(ticket, member, rows)

        self.bounded.gather_rows(
            member,
            self.gossip.membership.live_peers(),
            self._monotonic_ms,
            self.config.strong_timeout_ms,
            gathered,
        )
        return ticket

    def _propose_retirement(self, ticket: Ticket, member: str, rows: list[RetiredRow]) -> None:
        """Propose the retirement of ``member``'s ``rows`` (every live node's copy, joined)."""
        assert self.strong is not None
        idempotency_key = f"{RETIREMENTS_KEY}/{member}"
        try:
            if self._closed:
                raise UnavailableError(SHUTTING_DOWN)
            decision = self.bounded_retirement(member, [rows])
            if not decision.rows:
                raise RefusedError(f"no bounded row of {member!r} is known at any live node")
            frame = decision.to_bytes().hex()
            command = self.session.command(
                RETIREMENTS_KEY, "set", "add", frame, None, self._now_ms, None, idempotency_key
            )
        except (RefusedError, UnavailableError) as error:
            ticket.fail(error)
            return
        retired_already = IDEMPOTENCY_REUSED.format(key=idempotency_key)

        def done(result: Result | ReadAnswer | None, error: Exception | None) -> None:
            if error is not None:
                ticket.fail(error)
            elif isinstance(result, Result) and result.error == retired_already:
                ticket.fail(RefusedError(f"the bounded rows of {member!r} were retired already"))
            elif not isinstance(result, Result) or not result.ok:
                ticket.fail(RefusedError("the retirement was refused by the state machine"))
            else:
                ticket.complete(
                    Answer(
                        RETIREMENTS_KEY,
                        "set",
                        "strong",
                        "strong",
                        applied=True,
                        value=len(decision.rows),
                    )
                )

        self.strong.submit(command, self._timeout_ticks(), done)

    def _apply_retirements_held(self, now_ms: int) -> None:
        """Apply every retirement the strong state machine holds (after it was restored from
        a snapshot; applying one again changes nothing)."""
        assert isinstance(self.strong, StrongReplica)
        view = self.strong.machine.read(RETIREMENTS_KEY)
        for _, _, items in () if view is None else view.windows:
            for item in items:
                self._apply_retirement_item(item, now_ms)

    def _on_strong_restore(self) -> None:
        self._apply_retirements_held(self._now_ms)

    def _on_retirement_command(self, data: bytes) -> None:
        """A committed command naming :data:`RETIREMENTS_KEY` (the strong log's watch)."""
        command = decode_command(data)
        if command.key == RETIREMENTS_KEY and command.operation == "add":
            self._apply_retirement_item(command.value, self._now_ms)

    def _apply_retirement_item(self, item: object, now_ms: int) -> None:
        """Apply one committed retirement (a hex frame); a bad one is counted, not applied."""
        try:
            if not isinstance(item, str):
                raise DecodeError(f"a retirement is a hex frame, got {item!r}")
            retirement = decode_retirement(bytes.fromhex(item))
        except (DecodeError, ValueError):
            self.bounded.counters.malformed += 1
            return
        self.bounded.retire(retirement, self._bounded_rule_or_none, now_ms)

    def peers_behind(self) -> list[str]:
        """Live gossip neighbours that have not acknowledged every local change yet: a stopping
        node steps until there are none (or a deadline), so its last deltas are not lost."""
        anti_entropy = self.gossip.anti_entropy
        sequence = anti_entropy.sequence
        neighbours = anti_entropy.neighbours(self.gossip.membership.live_peers())
        behind = []
        for peer in neighbours:
            acknowledged = anti_entropy.acknowledged(peer)
            if sequence and (acknowledged is None or acknowledged < sequence):
                behind.append(peer)
        return behind

    def leave(self) -> None:
        """Announce that this node leaves the cluster, and hand its bounded rights over to a
        live peer (frames go to the outbox)."""
        self.bounded.hand_over(self.gossip.membership.live_peers(), self._now_ms)
        self.outbox.extend(self.gossip.leave(self._now_ms))

    def close(self) -> None:
        """Fail every request in flight as unavailable; later requests fail the same way."""
        if self._closed:
            return
        self._closed = True
        self.quorum.fail_all(UnavailableError(SHUTTING_DOWN))
        self.bounded.fail_all(UnavailableError(SHUTTING_DOWN))
        if self.strong is not None:
            self.strong.fail_all(UnavailableError(SHUTTING_DOWN))
        if self.paxos is not None:
            self.paxos.fail_all(UnavailableError(SHUTTING_DOWN))

    # ------------------------------------------------------------------ inspection

    def status(self) -> dict[str, Any]:
        """Members, gossip, ingest, Raft, quorum and catalog state, as plain data."""
        members = {
            node_id: {"status": m.status, "incarnation": m.incarnation, "address": m.address}
            for node_id, m in self.gossip.membership.members.items()
        }
        return {
            "replica": self.replica,
            "watermark_ms": self.store.watermark_ms,
            "members": members,
            "gossip": dataclasses.asdict(self.gossip.stats),
            "ingest": dataclasses.asdict(self.ingest_counters),
            "ingest_errors": dict(self.ingest_errors),
            "raft": self._raft_status(),
            "paxos": None if self.paxos is None else self.paxos.status(),
            "quorum": dataclasses.asdict(self.quorum.counters),
            "bounded": dataclasses.asdict(self.bounded.counters),
            "bounded_replica": self.bounded.replica,
            "catalog": {
                "keys": len(self.catalog.keys()),
                "kind_conflicts": self.catalog.conflicts(),
                "rules_fingerprint": self.policy.fingerprint,
            },
        }

    def _raft_status(self) -> dict[str, object] | None:
        if self.strong is None:
            return None
        if isinstance(self.strong, StrongClient):
            counters = dataclasses.asdict(self.strong.counters)
            return {"role": "client", "voters": self.strong.voters, **counters}
        status = self.strong.status()
        return {
            "role": status.role.name.lower(),
            "term": status.term,
            "leader": status.leader,
            "commit": status.commit,
            "applied": status.applied,
            "voters": list(status.voters),
            **dataclasses.asdict(self.strong.counters),
        }
