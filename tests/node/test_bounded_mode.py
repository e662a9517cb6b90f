"""Bounded keys through the engine and the real driver, on the simulated network."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtstream.config import PolicyRule
from crdtstream.engine import Ticket
from crdtstream.engine.bounded_mode import share_of
from crdtstream.errors import InvalidValueError, RefusedError
from crdtstream.node import Node
from tests.node.test_node_simulation import Cluster
from transports.memory import FaultOptions

NAMES = ["a", "b", "c"]
LIMIT = 30
WINDOW_MS = 60_000
RULE = PolicyRule("quota.*", "bounded", limit=LIMIT, window_ms=WINDOW_MS, members=tuple(NAMES))


def _cluster(seed: int) -> Cluster:
    cluster = Cluster(seed, NAMES, None, policy=(RULE,))
    # The manual clock starts at 1 000 000 ms; the nodes started there, so they take their
    # share of windows opening from then on: move to the next window boundary.
    to_boundary = WINDOW_MS - cluster.clock.now_ms() % WINDOW_MS
    cluster.clock.advance(to_boundary - 200)
    cluster.run(400)
    return cluster


def _consume(node: Node, amount: int, op: str = "consume") -> Ticket:
    return node.engine.write("quota.api", op, amount)


def _rights(node: Node) -> int:
    view = node.engine.read("quota.api").result().value
    assert isinstance(view, dict)
    return int(view["rights"])


def test_a_node_spends_its_share_locally_then_obtains_rights_from_its_peers() -> None:
    cluster = _cluster(1)
    a = cluster.nodes["a"]
    assert _rights(a) == LIMIT // 3
    first = _consume(a, LIMIT // 3, "conditional_add")
    assert first.done, "a consumption within this node's rights answers at once"
    assert first.result().applied
    waiting = _consume(a, 5)
    assert not waiting.done
    cluster.run(300)
    assert waiting.result().accepted == 5
    assert a.engine.bounded.counters.consumed_after_wait == 1
    cluster.run(1_000)
    answers = [node.engine.read("quota.api").result() for node in cluster.nodes.values()]
    assert {answer.value["value"] for answer in answers} == {LIMIT // 3 + 5}  # type: ignore[index]
    assert {answer.value["limit"] for answer in answers} == {LIMIT}  # type: ignore[index]


def test_concurrent_consumption_from_every_node_never_exceeds_the_limit() -> None:
    cluster = _cluster(2)
    cluster.network.set_faults(FaultOptions(drop_probability=0.2, duplicate_probability=0.2))
    tickets = []
    for _ in range(25):
        for node in cluster.nodes.values():
            tickets.append(_consume(node, 1))
        cluster.run(20)
    cluster.run(2_000)
    assert all(ticket.done for ticket in tickets)
    accepted = sum(ticket.result().accepted for ticket in tickets if ticket.error is None)
    refused = [ticket.error for ticket in tickets if ticket.error is not None]
    assert accepted + len(refused) == len(tickets)
    assert accepted <= LIMIT
    assert accepted >= LIMIT - 3, "rights stayed where nobody used them"
    assert all(isinstance(error, RefusedError) for error in refused)
    assert all("no_rights" in str(error) for error in refused)


def test_a_minority_keeps_spending_its_rights_and_never_more() -> None:
    cluster = _cluster(3)
    c = cluster.nodes["c"]
    a = cluster.nodes["a"]
    cluster.network.set_faults(FaultOptions().partitioned({"a", "b"}, {"c"}))
    served = [_consume(c, 1) for _ in range(LIMIT // 3)]
    assert all(ticket.done and ticket.error is None for ticket in served)
    over = _consume(c, 1)
    beyond_the_majority = _consume(a, 2 * LIMIT // 3 + 1)  # needs some of c's rights
    cluster.run(2_000)
    for refused in (over, beyond_the_majority):
        assert isinstance(refused.error, RefusedError)
        assert "no_rights" in str(refused.error)
    # Healed: the rights c no longer holds are spent; a and b's still serve.
    cluster.network.set_faults(FaultOptions())
    after = _consume(a, 2 * LIMIT // 3)
    cluster.run(1_000)
    assert after.error is None
    with pytest.raises(RefusedError, match="no_rights"):
        _consume(c, 1).result()  # c knows the whole quota is spent: refused at once
    cluster.run(2_000)
    for node in cluster.nodes.values():
        assert node.engine.read("quota.api").result().value == {
            "value": LIMIT,
            "limit": LIMIT,
            "rights": 0,
        }


def test_bad_bounded_writes_are_refused_with_typed_errors() -> None:
    cluster = _cluster(4)
    a = cluster.nodes["a"]
    with pytest.raises(InvalidValueError, match="bounded"):
        _consume(a, 1, "add").result()
    with pytest.raises(InvalidValueError, match="integer"):
        _consume(a, -1).result()
    with pytest.raises(InvalidValueError, match="limit"):
        a.engine.write("quota.api", "conditional_add", 1, limit=LIMIT + 1).result()
    with pytest.raises(RefusedError, match="no_rights"):
        _consume(a, LIMIT + 1).result()
    with pytest.raises(RefusedError, match="bounded"):
        a.engine.read("quota.api", consistency="quorum").result()
    with pytest.raises(RefusedError, match="bounded"):
        a.engine.read("other", consistency="bounded").result()


def test_a_node_that_leaves_hands_its_rights_to_the_peer_that_uses_the_key() -> None:
    cluster = _cluster(5)
    a, c = cluster.nodes["a"], cluster.nodes["c"]
    assert _consume(a, 5).done
    cluster.run(500)  # a's use reaches c in the demand hints
    c.close()
    del cluster.nodes["c"]
    cluster.run(500)
    assert c.engine.bounded.counters.rights_handed_over == LIMIT // 3
    assert _rights(a) == LIMIT // 3 - 5 + LIMIT // 3
    assert _rights(cluster.nodes["b"]) == LIMIT // 3


def test_a_removed_members_rows_are_retired_and_its_rights_reissued_by_the_heir() -> None:
    cluster = _cluster(6)
    a, b, c = (cluster.nodes[name] for name in NAMES)
    assert _consume(c, 4).done
    cluster.run(500)  # c's spending reaches a and b
    c.transport.close()  # c dies with its rights: nobody else may spend them yet
    del cluster.nodes["c"]
    cluster.run(500)
    with pytest.raises(RefusedError, match="not removed"):
        a.engine.bounded_retirement("c")
    assert a.engine.remove_member("c", force=True)
    decision = a.engine.bounded_retirement("c", [b.engine.bounded.rows_of("c")])
    assert decision.heir == "a"
    assert [row.replica for row in decision.rows] == [c.engine.bounded.replica]
    frame = decision.to_bytes()  # what the strong log carries and every node applies
    assert [a.engine.apply_bounded_retirement(frame), b.engine.apply_bounded_retirement(frame)] == [
        1,
        1,
    ]
    assert _rights(a) == LIMIT // 3 + LIMIT // 3 - 4
    tickets = [_consume(node, 1) for node in (a, b) for _ in range(LIMIT)]
    cluster.run(3_000)
    accepted = sum(1 for ticket in tickets if ticket.error is None)
    assert accepted == LIMIT - 4
    for node in (a, b):
        assert node.engine.read("quota.api").result().value == {
            "value": LIMIT,
            "limit": LIMIT,
            "rights": 0,
        }
        assert node.engine.bounded.counters.entries_over_limit == 0


@given(
    limit=st.integers(1, 10_000),
    members=st.lists(
        st.text("abcdefgh", min_size=1, max_size=3), min_size=2, max_size=12, unique=True
    ),
    data=st.data(),
)
def test_nodes_with_an_old_and_a_shrunk_member_list_never_grant_past_the_limit(
    limit: int, members: list[str], data: st.DataObject
) -> None:
    """A removed member is taken out of a rule's ``members`` one node at a time: each
    remaining member grants its share under the list it has, old or new, and the shares never
    add up to more than the limit (each remaining member's share only grows)."""
    removed = data.draw(
        st.lists(st.sampled_from(members), min_size=1, max_size=len(members) - 1, unique=True)
    )
    old = PolicyRule("quota.*", "bounded", limit=limit, window_ms=WINDOW_MS, members=tuple(members))
    remaining = tuple(m for m in members if m not in removed)
    new = PolicyRule("quota.*", "bounded", limit=limit, window_ms=WINDOW_MS, members=remaining)
    assert sum(share_of(new, member) for member in remaining) == limit
    for member in remaining:
        assert share_of(new, member) >= share_of(old, member), member
    updated = data.draw(st.sets(st.sampled_from(remaining)))
    granted = sum(share_of(new if m in updated else old, m) for m in remaining)
    assert granted <= limit
