"""Per-key consistency policy: ordered glob rules from key to mode (a pure leaf module).

The first rule whose pattern matches a key decides its mode; a key no rule matches is
``eventual``. Every node must hold the same rules, so :attr:`Policy.fingerprint` gives a short
digest to compare when peers meet.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Sequence

from crdtstream.config import Backend, Mode, PolicyRule

__all__ = ["RESERVED_PREFIX", "Policy", "rule_body", "rule_from_body"]

RESERVED_PREFIX = "__crdtstream."
"""Keys the agent keeps for its own bookkeeping (:mod:`crdtstream.agent.export`): no client
writes them, through HTTP or statsd."""

_CACHE_KEYS_MAX = 100_000


class Policy:
    """Ordered glob rules; :meth:`mode_of` is cached per key."""

    def __init__(self, rules: Sequence[PolicyRule] = ()) -> None:
        self.rules = tuple(rules)
        # What nodes must agree on about each rule (see rule_body).
        text = json.dumps([rule_body(rule) for rule in self.rules])
        self.fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]
        self._cache: dict[str, Mode] = {}

    def rule_of(self, key: str) -> PolicyRule | None:
        """The first rule matching ``key``, None when none does (uncached: for the few
        ``bounded`` keys, whose rule carries their limit)."""
        return next((rule for rule in self.rules if fnmatch.fnmatchcase(key, rule.pattern)), None)

    def mode_of(self, key: str) -> Mode:
        """The mode of ``key``: the first matching rule's, else ``eventual``."""
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        mode: Mode = next(
            (rule.mode for rule in self.rules if fnmatch.fnmatchcase(key, rule.pattern)),
            "eventual",
        )
        if len(self._cache) >= _CACHE_KEYS_MAX:
            self._cache.clear()
        self._cache[key] = mode
        return mode

    def backend_of(self, key: str) -> Backend:
        """The backend of a strong key: the first matching rule's (``raft`` by default)."""
        return next(
            (rule.backend for rule in self.rules if fnmatch.fnmatchcase(key, rule.pattern)),
            "raft",
        )


def rule_body(rule: PolicyRule) -> list[object]:
    """A rule as its digest and the replicated catalog hold it: what nodes must agree on.

    A backend other than ``raft`` is added (so policies written before backends existed keep
    their fingerprints); a bounded rule adds its quota and members (nodes that split a limit
    over different member lists could together grant more than the limit).
    """
    body: list[object] = [rule.pattern, rule.mode]
    if rule.backend != "raft":
        body.append(rule.backend)
    if rule.mode == "bounded":
        body.extend((rule.limit, rule.window_ms, list(rule.members)))
    return body


def rule_from_body(body: Sequence[object]) -> PolicyRule:
    """The rule :func:`rule_body` describes; raises ``ValueError`` or ``TypeError`` (through
    :class:`PolicyRule`'s checks, a ``ConfigError``) on a body no node writes."""
    pattern, mode, *rest = body
    if mode == "bounded":
        limit, window_ms, members = rest
        if not (type(limit) is int and type(window_ms) is int and isinstance(members, list)):
            raise TypeError("a bounded rule is [pattern, mode, limit, window_ms, [members]]")
        return PolicyRule(
            str(pattern),
            "bounded",
            limit=limit,
            window_ms=window_ms,
            members=tuple(str(member) for member in members),
        )
    backend = rest[0] if rest else "raft"
    return PolicyRule(str(pattern), mode, backend=backend)  # type: ignore[arg-type]
