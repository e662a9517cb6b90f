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

__all__ = ["Policy", "rule_body"]

_CACHE_KEYS_MAX = 100_000


class Policy:
    """Ordered glob rules; :meth:`mode_of` is cached per key."""

    def __init__(self, rules: Sequence[PolicyRule] = ()) -> None:
        self.rules = tuple(rules)
        # A rule's backend joins the digest only when it is not the default, so the policies
        # written before backends existed keep their fingerprints.
        text = json.dumps([rule_body(rule) for rule in self.rules])
        self.fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]
        self._cache: dict[str, Mode] = {}

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


def rule_body(rule: PolicyRule) -> list[str]:
    """A rule as its digest and the replicated catalog hold it."""
    body = [rule.pattern, rule.mode]
    return body if rule.backend == "raft" else [*body, rule.backend]
