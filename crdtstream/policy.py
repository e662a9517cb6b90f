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

from crdtstream.config import Mode, PolicyRule

__all__ = ["Policy"]

_CACHE_KEYS_MAX = 100_000


class Policy:
    """Ordered glob rules; :meth:`mode_of` is cached per key."""

    def __init__(self, rules: Sequence[PolicyRule] = ()) -> None:
        self.rules = tuple(rules)
        text = json.dumps([_fingerprinted(rule) for rule in self.rules])
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


def _fingerprinted(rule: PolicyRule) -> list[object]:
    """What nodes must agree on about a rule: a bounded rule's quota and members too (nodes that
    split a limit over different member lists could together grant more than the limit)."""
    if rule.mode != "bounded":
        return [rule.pattern, rule.mode]
    return [rule.pattern, rule.mode, rule.limit, rule.window_ms, list(rule.members)]
