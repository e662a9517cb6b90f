"""The key catalog: a pycrdt document synchronised with the Yjs protocol in gossip frames."""

from __future__ import annotations

import random

import pycrdt
import pytest

from crdtstream import wire
from crdtstream.config import PolicyRule
from crdtstream.errors import DecodeError
from crdtstream.gossip.catalog import Catalog
from crdtstream.gossip.messages import Message


def sync(catalogs: dict[str, Catalog], opener: str, peer: str, now_ms: int = 0) -> int:
    """One exchange opened by ``opener`` towards ``peer``; returns the messages it took."""
    queue: list[tuple[str, Message]] = [
        (opener, message) for message in catalogs[opener].tick(now_ms, [peer])
    ]
    count = 0
    while queue:
        source, message = queue.pop(0)
        count += 1
        assert message.tag == wire.Tag.CATALOG_SYNC
        for reply in catalogs[message.peer_id].step(source, message.body):
            queue.append((message.peer_id, reply))
    return count


def pair() -> dict[str, Catalog]:
    return {"a": Catalog("a~1", random.Random(1)), "b": Catalog("b~2", random.Random(2))}


def test_one_exchange_brings_both_sides_to_the_same_keys() -> None:
    catalogs = pair()
    catalogs["a"].declare("api.hits", "counter")
    catalogs["b"].declare("queue.depth", "gauge")
    assert sync(catalogs, "a", "b") == 4  # step1, step2 + step1 back, step2
    expected = {"api.hits": "counter", "queue.depth": "gauge"}
    assert catalogs["a"].keys() == catalogs["b"].keys() == expected


def test_a_key_declared_with_two_kinds_resolves_the_same_way_and_is_reported_on_both() -> None:
    catalogs = pair()
    assert catalogs["a"].declare("latency", "distribution") == "distribution"
    assert catalogs["b"].declare("latency", "gauge") == "gauge"
    sync(catalogs, "b", "a")
    for catalog in catalogs.values():
        assert catalog.kind_of("latency") == "gauge"  # gauge comes before distribution
        assert catalog.conflicts() == {"latency": ["gauge", "distribution"]}
    assert catalogs["a"].declare("latency", "distribution") == "gauge"


def test_declaring_a_known_key_again_writes_nothing() -> None:
    catalog = pair()["a"]
    catalog.declare("k", "counter")
    state = catalog.doc.get_state()
    catalog.declare("k", "counter")
    assert catalog.doc.get_state() == state


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        pair()["a"].declare("k", "histogram")


def test_policy_rules_travel_and_decide_modes_first_match_wins() -> None:
    catalogs = pair()
    rules = [PolicyRule("quota.*", "strong"), PolicyRule("*.budget", "quorum")]
    catalogs["a"].set_rules(rules)
    sync(catalogs, "a", "b")
    assert catalogs["b"].rules() == rules
    assert catalogs["b"].rules_fingerprint() == catalogs["a"].rules_fingerprint()
    assert catalogs["b"].mode_of("quota.eu.budget") == "strong"
    assert catalogs["b"].mode_of("team.budget") == "quorum"
    assert catalogs["b"].mode_of("api.hits") == "eventual"


def test_any_yjs_client_can_read_the_catalog() -> None:
    catalog = pair()["a"]
    catalog.declare("api.hits", "counter")
    reader: pycrdt.Doc[pycrdt.Map[bool]] = pycrdt.Doc()
    reader.apply_update(catalog.doc.get_update())
    claims = reader.get("claims", type=pycrdt.Map)
    assert list(claims.keys()) == ["api.hits\x1fcounter\x1fa~1"]


@pytest.mark.parametrize(
    "body",
    [
        [0, b"\x00"],
        [0, b"\x01\x00\x00"],
        [0, b"\x00\x01\xff\xff\xff"],
        [0, b"\x00\x02\x05abc"],
        ["x", b"\x00\x00\x00"],
        [0, "text"],
    ],
)
def test_malformed_sync_messages_raise_decode_error_and_change_nothing(body: list[object]) -> None:
    catalog = pair()["a"]
    catalog.declare("k", "counter")
    before = catalog.doc.get_state()
    with pytest.raises(DecodeError):
        catalog.step("b", body)
    assert catalog.doc.get_state() == before


def test_declare_many_reports_conflicts_and_writes_one_claim_per_key() -> None:
    catalogs = pair()
    catalogs["b"].declare_many(["x", "y"], "counter")
    sync(catalogs, "a", "b")
    conflicts = catalogs["a"].declare_many(["y", "z", "z", "w"], "gauge")
    assert conflicts == ["y"]  # counter comes before gauge
    assert catalogs["a"].keys() == {"x": "counter", "y": "counter", "z": "gauge", "w": "gauge"}
    assert catalogs["a"].stats.conflicting_declarations == 1
    assert len(catalogs["a"].doc.get("claims", type=pycrdt.Map)) == 5  # x, y twice, z, w


def test_the_kept_index_matches_a_catalog_read_afresh_after_local_and_synced_changes() -> None:
    """The per-key index is kept up to date change by change; a new catalog built from the same
    document must read the same keys, kinds and conflicts."""
    for seed in range(5):
        chooser = random.Random(seed)
        catalogs = {
            name: Catalog(f"{name}~{index}", random.Random(index))
            for index, name in enumerate("abc")
        }
        for step in range(30):
            name = chooser.choice("abc")
            if chooser.random() < 0.7:
                keys = [f"k{chooser.randrange(25)}" for _ in range(chooser.randrange(1, 6))]
                catalogs[name].declare_many(keys, chooser.choice(["counter", "gauge", "set"]))
            else:
                sync(catalogs, name, chooser.choice([n for n in "abc" if n != name]), step)
        for name, catalog in catalogs.items():
            fresh = Catalog("reader~9", random.Random(9))
            fresh.doc.apply_update(catalog.doc.get_update())
            assert catalog.keys() == fresh.keys(), f"seed={seed} catalog={name}"
            assert catalog.conflicts() == fresh.conflicts(), f"seed={seed} catalog={name}"
