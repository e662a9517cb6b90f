"""Bounded policy rules: validated when built and parsed, and part of the policy fingerprint."""

from __future__ import annotations

import random

import pytest

from crdtstream.agent.settings import parse_policy
from crdtstream.config import PolicyRule
from crdtstream.engine.bounded_mode import share_of
from crdtstream.errors import ConfigError
from crdtstream.gossip.catalog import Catalog
from crdtstream.policy import Policy


def test_a_bounded_rule_needs_a_limit_a_window_and_members() -> None:
    with pytest.raises(ConfigError, match=r"policy\.limit"):
        PolicyRule("q.*", "bounded", members=("a",))
    with pytest.raises(ConfigError, match=r"policy\.members"):
        PolicyRule("q.*", "bounded", limit=10)
    with pytest.raises(ConfigError, match=r"policy\.members"):
        PolicyRule("q.*", "bounded", limit=10, members=("a", "a"))
    with pytest.raises(ConfigError, match=r"policy\.window_ms"):
        PolicyRule("q.*", "bounded", limit=10, window_ms=0, members=("a",))
    with pytest.raises(ConfigError, match=r"policy\.limit"):
        PolicyRule("q.*", "eventual", limit=10)


def test_a_bounded_rule_is_parsed_from_a_table() -> None:
    rules = parse_policy(
        [
            "hits=eventual",
            {"pattern": "q.*", "mode": "bounded", "limit": 7, "members": ["b", "a"]},
        ]
    )
    assert rules[1] == PolicyRule("q.*", "bounded", limit=7, window_ms=60_000, members=("b", "a"))
    with pytest.raises(ConfigError, match="table"):
        parse_policy(["q.*=bounded"])


def test_the_limit_is_split_evenly_in_member_order_and_sums_to_it() -> None:
    rule = PolicyRule("q.*", "bounded", limit=11, members=("c", "a", "b"))
    shares = {node: share_of(rule, node) for node in ("a", "b", "c", "stranger")}
    assert shares == {"a": 4, "b": 4, "c": 3, "stranger": 0}
    assert sum(shares.values()) == 11


def test_nodes_that_disagree_on_a_quota_have_different_fingerprints() -> None:
    base = PolicyRule("q.*", "bounded", limit=10, members=("a", "b"))
    fingerprints = {
        Policy([rule]).fingerprint
        for rule in (
            base,
            PolicyRule("q.*", "bounded", limit=11, members=("a", "b")),
            PolicyRule("q.*", "bounded", limit=10, members=("a", "b", "c")),
            PolicyRule("q.*", "bounded", limit=10, window_ms=1_000, members=("a", "b")),
        )
    }
    assert len(fingerprints) == 4
    assert (
        Policy([PolicyRule("x", "strong")]).fingerprint
        == Policy([PolicyRule("x", "strong")]).fingerprint
    )


def test_the_replicated_catalog_keeps_bounded_and_paxos_rules_whole() -> None:
    """Every field nodes must agree on survives the catalog's encoding of the rules."""
    rules = [
        PolicyRule("quota.*", "bounded", limit=30, window_ms=10_000, members=("n1", "n2")),
        PolicyRule("jobs.*", "strong", backend="paxos"),
        PolicyRule("budget.*", "strong"),
        PolicyRule("orders.*", "quorum"),
    ]
    catalog = Catalog("n1~1", random.Random(1))
    catalog.set_rules(rules)
    assert catalog.rules() == rules
