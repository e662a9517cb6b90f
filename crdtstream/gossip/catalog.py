"""The key catalog: which keys exist, their kind, and the policy rules, in a pycrdt document.

This is the only module that imports ``pycrdt``; its exceptions become
:class:`~crdtstream.errors.DecodeError` here. The document is synchronised with the Yjs sync
protocol (state vector → missing updates) carried in ``Tag.CATALOG_SYNC`` frames over the same
transport as the rest of gossip, so any Yjs client can read a copy of it.

Layout of the document:

- ``claims`` (a Map): one entry per (key, kind, replica) that first declared the key with that
  kind, named ``key \\x1f kind \\x1f replica``. A replica only writes a claim when the key is
  unknown to it or known with another kind, so the map stays close to one entry per key.
- ``policy`` (a Map): ``rules``, the ordered glob rules as JSON ``[[pattern, mode], ...]``.

A key claimed with two kinds (two nodes first saw it concurrently, with different kinds) is a
conflict: every node resolves it the same way — the claim with the lowest (kind order, replica)
wins — and every node lists it in :meth:`Catalog.conflicts`, so both sides report it.

Sync (pure: no clock, no I/O): every ``interval_ms`` the catalog sends its state vector to one
random peer (``SYNC_STEP1``, marked as opening an exchange); the peer answers with what the
sender lacks (``SYNC_STEP2``) and with its own state vector, which the opener answers in turn.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pycrdt

from crdtstream import wire
from crdtstream.config import Mode, PolicyRule
from crdtstream.errors import DecodeError
from crdtstream.gossip.messages import Message
from crdtstream.policy import Policy, rule_body, rule_from_body

__all__ = ["KIND_ORDER", "Catalog", "CatalogStats"]

KIND_ORDER = ("counter", "gauge", "set", "distinct", "distribution", "max", "min")
"""The kinds, in the order that decides a conflict (earlier wins)."""

_SEPARATOR = "\x1f"
_OPENS_EXCHANGE = 1


@dataclass(slots=True)
class CatalogStats:
    """Synchronisations and declarations of one key catalog."""

    syncs_opened: int = 0
    updates_applied: int = 0
    conflicting_declarations: int = 0
    """Keys declared here with a kind while another kind was already claimed for them."""


class Catalog:
    """One replica's copy of the key catalog and its Yjs synchronisation."""

    def __init__(self, replica: str, rng: random.Random, interval_ms: int = 1_000) -> None:
        self.replica = replica
        self.interval_ms = interval_ms
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=rng.getrandbits(52))
        self._claims: pycrdt.Map[Any] = self.doc.get("claims", type=pycrdt.Map)
        self._policy: pycrdt.Map[Any] = self.doc.get("policy", type=pycrdt.Map)
        self._rng = rng
        self._next_sync_ms: int | None = None
        self._index: dict[str, set[tuple[str, str]]] | None = None
        self._subscription = self._claims.observe(self._invalidate)
        self.stats = CatalogStats()

    def _invalidate(self, event: Any) -> None:
        """Keep the index in step with every change (local or synced), entry by entry: a
        rebuild per change would make declaring N keys cost O(N**2)."""
        index = self._index
        if index is None:
            return
        for name, change in event.keys.items():
            key, kind, replica = str(name).rsplit(_SEPARATOR, 2)
            if change["action"] == "delete":
                claims = index.get(key)
                if claims is not None:
                    claims.discard((kind, replica))
                    if not claims:
                        del index[key]
            else:
                index.setdefault(key, set()).add((kind, replica))

    def _claims_by_key(self) -> dict[str, set[tuple[str, str]]]:
        if self._index is None:
            index: dict[str, set[tuple[str, str]]] = {}
            for name in self._claims.keys():  # noqa: SIM118 - pycrdt Map iteration
                key, kind, replica = str(name).rsplit(_SEPARATOR, 2)
                index.setdefault(key, set()).add((kind, replica))
            self._index = index
        return self._index

    def declare(self, key: str, kind: str) -> str:
        """Record that ``key`` is used with ``kind`` here; return the key's resolved kind.

        When the result differs from ``kind`` the key has a conflict: the caller rejects (and
        counts) the write, as it would a :class:`~crdtstream.errors.KindConflictError`.
        """
        self.declare_many([key], kind)
        return self._resolve(self._claims_by_key()[key])

    def declare_many(self, keys: Sequence[str], kind: str) -> list[str]:
        """:meth:`declare` every key of ``keys`` with ``kind``, in one document transaction;
        return the keys whose resolved kind is another one (conflicts)."""
        if kind not in KIND_ORDER:
            raise ValueError(f"unknown kind {kind!r}; expected one of {KIND_ORDER}")
        keys = list(dict.fromkeys(keys))
        index = self._claims_by_key()
        unclaimed = [
            key for key in keys if not any(claimed == kind for claimed, _ in index.get(key, ()))
        ]
        if unclaimed:
            self.stats.conflicting_declarations += sum(key in index for key in unclaimed)
            with self.doc.transaction():
                for key in unclaimed:
                    self._claims[_SEPARATOR.join((key, kind, self.replica))] = True
        index = self._claims_by_key()
        return [key for key in keys if self._resolve(index[key]) != kind]

    def kind_of(self, key: str) -> str | None:
        """The key's resolved kind, or None when no node declared it."""
        claims = self._claims_by_key().get(key)
        return None if not claims else self._resolve(claims)

    def keys(self) -> dict[str, str]:
        """Every declared key with its resolved kind."""
        return {key: self._resolve(claims) for key, claims in self._claims_by_key().items()}

    def conflicts(self) -> dict[str, list[str]]:
        """Keys declared with more than one kind, with all their kinds (winner first)."""
        result = {}
        for key, claims in self._claims_by_key().items():
            kinds = sorted({kind for kind, _ in claims}, key=KIND_ORDER.index)
            if len(kinds) > 1:
                result[key] = kinds
        return result

    @staticmethod
    def _resolve(claims: set[tuple[str, str]]) -> str:
        return min(claims, key=lambda claim: (KIND_ORDER.index(claim[0]), claim[1]))[0]

    def set_rules(self, rules: Sequence[PolicyRule]) -> None:
        """Replace the policy rules (ordered; the first matching pattern decides)."""
        self._policy["rules"] = json.dumps([rule_body(rule) for rule in rules])

    def rules(self) -> list[PolicyRule]:
        """The policy rules in order."""
        raw = self._policy.get("rules")
        if raw is None:
            return []
        return [rule_from_body(body) for body in json.loads(str(raw))]

    def rules_fingerprint(self) -> str:
        """A short digest of the rules, exchanged when peers meet to refuse a mismatch."""
        return Policy(self.rules()).fingerprint

    def mode_of(self, key: str) -> Mode:
        """The key's mode: the first rule whose glob matches, else ``eventual``."""
        return Policy(self.rules()).mode_of(key)

    # ------------------------------------------------------------------ sync

    def tick(self, now_ms: int, peers: Sequence[str]) -> list[Message]:
        """Every ``interval_ms``, open a sync exchange with one random peer."""
        if self._next_sync_ms is not None and now_ms < self._next_sync_ms:
            return []
        self._next_sync_ms = now_ms + self.interval_ms
        if not peers:
            return []
        self.stats.syncs_opened += 1
        peer = peers[self._rng.randrange(len(peers))]
        return [self._step1(peer, _OPENS_EXCHANGE)]

    def _step1(self, peer: str, flags: int) -> Message:
        return Message(peer, wire.Tag.CATALOG_SYNC, [flags, pycrdt.create_sync_message(self.doc)])

    def step(self, source: str, body: Any) -> list[Message]:
        """Handle a sync message from ``source``; raises :class:`DecodeError` on bad bytes."""
        flags, message = body
        if not (isinstance(flags, int) and isinstance(message, bytes) and len(message) >= 2):
            raise DecodeError("catalog sync body must be [flags, yjs sync message]")
        if message[0] != pycrdt.YMessageType.SYNC:
            raise DecodeError(f"not a Yjs sync message: first byte {message[0]}")
        try:
            reply = pycrdt.handle_sync_message(message[1:], self.doc)
        except (ValueError, IndexError, TypeError, RuntimeError) as error:
            raise DecodeError(f"bad Yjs sync message: {error}") from error
        if message[1] != pycrdt.YSyncMessageType.SYNC_STEP1:
            self.stats.updates_applied += 1
        replies = []
        if reply is not None:
            replies.append(Message(source, wire.Tag.CATALOG_SYNC, [0, reply]))
        if flags & _OPENS_EXCHANGE:
            replies.append(self._step1(source, 0))
        return replies
