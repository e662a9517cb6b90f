"""Idempotency keys on quorum writes: a Raft claim decides the one node that applies the write.

A quorum write is applied to the store of the node that takes it, in that node's replica slot,
where one write cannot be told from another after the fact. A retry sent to another node (the
usual move when the first one timed out or died) would therefore count the write twice. So a
write carrying an ``Idempotency-Key`` first **claims** the key in the replicated idempotency
table of the Raft state machine (:mod:`crdtstream.raft.state_machine`), with a digest of the
request:

- the first claim makes this node the key's holder: it applies the write, confirms it at a
  majority like any quorum write, answers, and **settles** the claim as ``done`` with the
  events accepted;
- a later claim (a retry at any node, before or after any restart) learns the claim instead:
  ``done`` is answered with the first result, without applying anything; a key claimed with
  another request is refused; a key still ``claimed`` by another node is unavailable for now
  (its holder is applying it, or crashed while doing so): only the holder can tell whether it
  applied the write, so the retry waits for it;
- a retry that finds the key claimed by this very node either confirms the write again (it was
  applied here: a **marker** says so) or, with no marker, **releases** the claim (this node
  never applied it: the claim's answer was lost, or the node crashed before applying) and
  claims it afresh.

The marker is what makes "applied" and "claimed" agree across a crash. It is a reserved key
(``__crdtstream.claim#...``, a ``max`` register of this replica) written into the store in the
same step as the write, so the local log holds both in the same record or neither: nothing of
the write leaves the node before that record is synced. On restart every marker of this replica
in the retained windows is a write to confirm and settle; a claim held by this node without a
marker was never applied: the node releases it by itself (a Raft voter finds its claims in its
copy of the replicated table; a node outside the voters asks the table through Raft, with a
``claims_held`` command) or when a retry comes to it. Hence this needs the local log
(``log_writes``): without it a crash could lose the write yet keep the claim.

A write applied here whose confirmation failed (no majority in time) stays applied, as every
quorum write does; its claim stays ``claimed`` and :meth:`QuorumClaims.tick` confirms the key's
state at a majority again until it succeeds and the claim is settled ``done``. Pure: time comes
in as arguments; Raft commands and quorum requests leave through the callbacks given.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from crdtstream.engine.requests import Completion, ReadAnswer
from crdtstream.engine.sessions import ClientSession
from crdtstream.engine.tickets import Answer, Ticket
from crdtstream.errors import (
    InvalidValueError,
    KindConflictError,
    RefusedError,
    UnavailableError,
)
from crdtstream.policy import RESERVED_PREFIX
from crdtstream.raft.commands import Command, Result
from crdtstream.raft.state_machine import DONE, RELEASED
from crdtstream.window.store import WindowStore

__all__ = ["CLAIMS_KEY", "CLAIM_PREFIX", "ClaimedKey", "QuorumClaims"]

CLAIM_PREFIX: Final = RESERVED_PREFIX + "claim#"
"""Marker keys: ``CLAIM_PREFIX`` + JSON ``[replica, idempotency key, digest, key, kind,
accepted]``."""

CLAIMS_KEY: Final = RESERVED_PREFIX + "claims"
"""The key named by a release, which knows the idempotency key but not the write's key (the
state machine reads neither key nor kind of a claim)."""

CONFIRM_AGAIN_MS: Final = 1_000
"""How often a write applied here but not yet settled is confirmed at a majority again."""

Submit = Callable[[Command, Completion], None]
"""Replicate a command through Raft; the completion gets its result or an error."""
Confirm = Callable[[int | str, Callable[[Exception | None], None]], None]
"""Confirm at a majority the store's changes since a version (int) or a key's state (str)."""
Held = Callable[[], list[tuple[str, str]]]
"""The idempotency keys (and digests) this replica claimed and has not settled, as far as this
node's copy of the replicated table knows (none on a node outside the Raft voters)."""
QueryHeld = Callable[[Completion], None]
"""Ask the replicated table through Raft for the claims this replica holds (a
:data:`~crdtstream.raft.commands.CLAIMS_HELD` command): how a node outside the voters finds
them."""
Acknowledge = Callable[[Ticket, Answer], None]
"""Answer a write once the local log holds it."""
Apply = Callable[[], tuple[int, Answer]]
"""Apply a write to the store: the store version before it and its answer (or a typed error)."""


@dataclass(frozen=True, slots=True)
class ClaimedKey:
    """A quorum write's idempotency key, with the write it stands for: the write's key and kind
    and the digest of the request."""

    key: str
    kind: str
    idempotency_key: str
    digest: str


@dataclass(slots=True)
class _Applied:
    """A claimed write applied here and not yet settled ``done``."""

    claim: ClaimedKey
    accepted: int
    confirming: bool = False


class QuorumClaims:
    """This node's claims of quorum writes' idempotency keys."""

    def __init__(
        self,
        replica: str,
        store: WindowStore,
        session: ClientSession,
        submit: Submit,
        confirm: Confirm,
        acknowledge: Acknowledge,
        held: Held,
        query_held: QueryHeld | None = None,
    ) -> None:
        """Resume the claims whose markers ``store`` holds for ``replica`` (after a restart).

        ``held`` reads this node's copy of the replicated table (a voter's); a node outside
        the voters has none and gives ``query_held`` instead, which asks the table through
        Raft: at start (a previous run may have left claims it never applied) and after a
        claim whose answer never came, until one query is answered."""
        self.replica = replica
        self.store = store
        self.session = session
        self._submit = submit
        self._confirm = confirm
        self._acknowledge = acknowledge
        self._held = held
        self.unsettled: dict[str, _Applied] = {}
        """Writes applied here whose claim is not settled yet, by idempotency key."""
        self._next_check_ms: int | None = None
        self._claiming: set[str] = set()
        self._releasing: set[str] = set()
        self._query_held = query_held
        self._query_due = query_held is not None
        self._querying = False
        for name in store.keys:
            applied = _marker_of(name, replica)
            if applied is not None:
                self.unsettled[applied.claim.idempotency_key] = applied

    def write(
        self, ticket: Ticket, claim: ClaimedKey, apply: Apply, now_ms: int, *, retried: bool = False
    ) -> None:
        """Claim the key for the write ``apply`` makes, then apply it, or answer from the claim
        (see the module docstring)."""
        idempotency_key = claim.idempotency_key
        if idempotency_key in self._claiming:
            # Its claim's answer is on the way: a second claim could overtake it (answers to a
            # node outside the voters travel the network) and find the key claimed here but
            # not applied yet.
            ticket.fail(
                UnavailableError(
                    f"a write with idempotency key {idempotency_key!r} is in progress on this "
                    "node; retry later (it will not be applied twice)"
                )
            )
            return
        command = self._command(claim, "claim", self.replica, now_ms)
        self._claiming.add(idempotency_key)

        def claimed(result: Result | ReadAnswer | None, error: Exception | None) -> None:
            self._claiming.discard(idempotency_key)
            if error is not None:
                # The claim may have committed with its answer lost: find out later.
                self._query_due = self._query_held is not None
                ticket.fail(error)
                return
            assert isinstance(result, Result)
            if not result.ok:
                ticket.fail(RefusedError(result.error or "refused by the state machine"))
                return
            state = result.value
            if result.applied:
                self._apply(ticket, claim, apply, now_ms)
            elif state[0] == DONE:
                answer = Answer(claim.key, claim.kind, "quorum", "quorum", accepted=int(state[2]))
                ticket.complete(answer)
            elif state[1] != self.replica:
                ticket.fail(
                    UnavailableError(
                        f"the write under idempotency key {idempotency_key!r} is being applied "
                        f"by {state[1]}, which has not confirmed it yet; retry later (it will "
                        "not be applied twice)"
                    )
                )
            elif idempotency_key in self.unsettled:
                self._confirm_again(self.unsettled[idempotency_key], ticket)
            elif retried:
                ticket.fail(UnavailableError(f"idempotency key {idempotency_key!r} is contended"))
            else:  # claimed here and never applied: release it, then claim it afresh
                self._settle(claim, f"{RELEASED} {self.replica}", now_ms)
                self.write(ticket, claim, apply, now_ms, retried=True)

        self._submit(command, claimed)

    def _apply(self, ticket: Ticket, claim: ClaimedKey, apply: Apply, now_ms: int) -> None:
        """Apply the write this node now holds the claim of, with its marker in the same step."""
        try:
            version, answer = apply()
        except (InvalidValueError, KindConflictError) as error:
            self._settle(claim, f"{RELEASED} {self.replica}", now_ms)
            ticket.fail(error)
            return
        applied = _Applied(claim, answer.accepted, confirming=True)
        marker = CLAIM_PREFIX + json.dumps(
            [
                self.replica,
                claim.idempotency_key,
                claim.digest,
                claim.key,
                claim.kind,
                applied.accepted,
            ]
        )
        self.store.add(marker, "max", 1.0, now_ms)
        self.unsettled[claim.idempotency_key] = applied

        def confirmed(error: Exception | None) -> None:
            applied.confirming = False
            if error is not None:
                ticket.fail(
                    UnavailableError(
                        f"{error}; the write was kept on this node, and a retry with the same "
                        "idempotency key will not apply it again"
                    )
                )
                return
            self._acknowledge(ticket, answer)
            self._settle_done(applied, now_ms)

        self._confirm(version, confirmed)

    def _confirm_again(self, applied: _Applied, ticket: Ticket | None) -> None:
        """Confirm the key's state here (holding the write) at a majority, then settle."""
        applied.confirming = True
        claim = applied.claim

        def confirmed(error: Exception | None) -> None:
            applied.confirming = False
            if error is not None:
                if ticket is not None:
                    ticket.fail(UnavailableError(f"{error}; the write is kept on this node"))
                return
            if ticket is not None:
                answer = Answer(
                    claim.key, claim.kind, "quorum", "quorum", accepted=applied.accepted
                )
                self._acknowledge(ticket, answer)
            self._settle_done(applied, None)

        self._confirm(claim.key, confirmed)

    def _settle_done(self, applied: _Applied, now_ms: int | None) -> None:
        def settled(result: Result | ReadAnswer | None, error: Exception | None) -> None:
            if error is None and isinstance(result, Result) and result.ok:
                state = result.value
                if result.applied or (isinstance(state, list) and state[0] == DONE):
                    self.unsettled.pop(applied.claim.idempotency_key, None)

        self._settle(applied.claim, f"{DONE} {applied.accepted} {self.replica}", now_ms, settled)

    def _settle(
        self,
        claim: ClaimedKey,
        outcome: str,
        now_ms: int | None,
        done: Completion | None = None,
    ) -> None:
        self._submit(self._command(claim, "settle", outcome, now_ms or 0), done or _ignore)

    def _command(self, claim: ClaimedKey, operation: str, value: str, stamp: int) -> Command:
        return self.session.claim_command(
            claim.key, claim.kind, operation, value, stamp, claim.idempotency_key, claim.digest
        )

    def tick(self, monotonic_ms: int) -> None:
        """Now and then: confirm and settle again the writes applied here and not settled, and
        release the claims this replica holds without having applied them (a run that crashed
        between claim and write, or a claim whose answer never came)."""
        if self._next_check_ms is None:
            self._next_check_ms = monotonic_ms + CONFIRM_AGAIN_MS
            return
        if monotonic_ms < self._next_check_ms:
            return
        self._next_check_ms = monotonic_ms + CONFIRM_AGAIN_MS
        for applied in list(self.unsettled.values()):
            if not applied.confirming:
                self._confirm_again(applied, None)
        self._release_unapplied(self._held())
        if self._query_held is not None and self._query_due and not self._querying:
            self._querying = True
            self._query_held(self._answered_held)

    def _answered_held(self, result: Result | ReadAnswer | None, error: Exception | None) -> None:
        """The claims this replica holds, as the replicated table answered (a query is sent
        again at the next check when it failed)."""
        self._querying = False
        if error is not None or not isinstance(result, Result) or not result.ok:
            return
        self._query_due = False
        self._release_unapplied([(str(key), str(digest)) for key, digest in result.value])

    def _release_unapplied(self, held: list[tuple[str, str]]) -> None:
        """Release the claims in ``held`` (this replica's) that it never applied."""
        for idempotency_key, digest in held:
            busy = self.unsettled.keys() | self._claiming | self._releasing
            if idempotency_key not in busy:
                self._release(ClaimedKey(CLAIMS_KEY, "counter", idempotency_key, digest))

    def _release(self, claim: ClaimedKey) -> None:
        """Release a claim of this replica that has no marker: it was never applied here."""
        self._releasing.add(claim.idempotency_key)

        def released(result: Result | ReadAnswer | None, error: Exception | None) -> None:
            self._releasing.discard(claim.idempotency_key)

        self._settle(claim, f"{RELEASED} {self.replica}", None, released)


def _ignore(result: Result | ReadAnswer | None, error: Exception | None) -> None:
    """A settle whose answer changes nothing here (a release: a later claim retries it)."""


def _marker_of(name: str, replica: str) -> _Applied | None:
    """The claim a marker key of ``replica`` records; None for any other key."""
    if not name.startswith(CLAIM_PREFIX):
        return None
    try:
        fields = json.loads(name[len(CLAIM_PREFIX) :])
    except ValueError:
        return None
    if not isinstance(fields, list) or len(fields) != 6 or fields[0] != replica:
        return None
    _, idempotency_key, digest, key, kind, accepted = fields
    if not all(isinstance(f, str) for f in (idempotency_key, digest, key, kind)):
        return None
    if type(accepted) is not int:
        return None
    return _Applied(ClaimedKey(key, kind, idempotency_key, digest), accepted)
