"""Retiring a dead member's bounded rows: its stranded rights are re-issued by one heir.

On the seeded simulation of the bounded core: a member dies with its data directory, holding
rights; the rows of its runs are retired at the join of the live nodes' copies, and the heir
re-issues what they held, so the whole quota can be spent again and never more. A member that
was not dead and spends past its frozen state is counted on every node that sees it.
"""

from __future__ import annotations

import random

import pytest

from crdtstream import wire
from crdtstream.config import PolicyRule
from crdtstream.crdt import BoundedCounter
from crdtstream.engine.bounded_mode import (
    BoundedKeys,
    RetiredRow,
    Retirement,
    decode_bounded,
    decode_retirement,
    heir_row,
)
from crdtstream.errors import DecodeError, UnavailableError
from tests.node.bounded_sim import KEY, BoundedSimulation

LIMIT = 60
WINDOW_MS = 600_000


def _simulation(seed: int) -> BoundedSimulation:
    sim = BoundedSimulation(seed, nodes=3, limit=LIMIT, window_ms=WINDOW_MS)
    sim.faulty = False
    return sim


def _run(sim: BoundedSimulation, steps: int) -> None:
    for _ in range(steps):
        sim.step()


def _retirement(sim: BoundedSimulation, member: str) -> Retirement:
    """What a proposer builds: the join of every live node's copy of the member's rows, and
    the lowest-id live member as the heir; it goes through the wire as the strong log holds it."""
    live = sim.live()
    copies = [core.rows_of(member) for core in (sim.nodes[n].core for n in live) if core]
    decision = Retirement(member, min(live), sim.now_ms, tuple(RetiredRow.join(copies)))
    return decode_retirement(decision.to_bytes())


def _retire_everywhere(sim: BoundedSimulation, decision: Retirement) -> list[int]:
    """Apply ``decision`` at every live node, as the strong log does; the rows each retired."""
    retired = []
    for node_id in sim.live():
        core = sim.nodes[node_id].core
        assert core is not None
        retired.append(core.retire(decision, sim._rule_of, sim.now_ms))
    return retired


def _spend_everything(sim: BoundedSimulation, nodes: list[str]) -> int:
    """Consume one unit at a time at ``nodes`` until a whole round is refused; the units done."""
    acked = 0
    while True:
        tickets = [sim.consume(node_id, 1) for node_id in nodes for _ in range(5)]
        _run(sim, 80)
        done = sum(1 for t in tickets if t is not None and t.done and t.error is None)
        if not done:
            return acked
        acked += done


def test_a_dead_members_rights_are_reissued_by_the_heir_and_the_limit_holds() -> None:
    sim = _simulation(11)
    _run(sim, 20)
    for _ in range(7):
        assert sim.consume("n2", 1) is not None
    _run(sim, 50)  # n2's use reaches its peers
    dead = sim.nodes["n2"].core
    assert dead is not None
    row = dead.replica
    stranded = dead.rights(KEY, sim.rule, sim.now_ms)
    assert stranded == LIMIT // 3 - 7
    sim.crash("n2", keep_data=False)
    _run(sim, 50)
    # Without a retirement the survivors can spend only their own shares.
    assert _spend_everything(sim, ["n0", "n1"]) == 2 * LIMIT // 3
    decision = _retirement(sim, "n2")
    assert decision.heir == "n0"
    assert [r.replica for r in decision.rows] == [row]
    assert decision.rows[0].frozen.spent_by(row) == 7
    for node_id in sim.live():
        core = sim.nodes[node_id].core
        assert core is not None
        assert core.retire(decision, sim._rule_of, sim.now_ms) == 1
        assert core.retire(decision, sim._rule_of, sim.now_ms) == 0, "applied twice"
    heir = sim.nodes["n0"].core
    assert heir is not None
    assert heir.counters.rights_reclaimed == stranded
    assert _spend_everything(sim, ["n0", "n1"]) == stranded
    window = sim.now_ms // WINDOW_MS
    union = sim.union(window)
    assert union.value == LIMIT
    assert union.granted_by(heir_row(row)) == stranded
    for node_id in sim.live():
        core = sim.nodes[node_id].core
        assert core is not None
        assert core.counters.retired_overspent == 0
        assert core.counters.entries_over_limit == 0, "the re-issued rights were refused"


def test_rights_moved_to_a_retired_row_later_follow_it_to_the_heir() -> None:
    sim = _simulation(12)
    _run(sim, 20)
    sim.consume("n2", 1)
    _run(sim, 50)
    sim.crash("n2", keep_data=False)
    n1 = sim.nodes["n1"].core
    assert n1 is not None
    window = sim.now_ms // WINDOW_MS
    dead_row = next(r for r in sim.union(window).writers() if r.startswith("n2~"))
    decision = _retirement(sim, "n2")
    _retire_everywhere(sim, decision)
    _run(sim, 50)
    # A transfer answering the dead node's old request, made after the decision.
    state = n1._windows[(KEY, window)]
    state.counter.transfer(5, dead_row)
    n1._changed(KEY, window, state)
    _run(sim, 100)
    heir = sim.nodes["n0"].core
    assert heir is not None
    assert heir.counters.rights_reclaimed == LIMIT // 3 - 1 + 5
    assert _spend_everything(sim, ["n0", "n1"]) == LIMIT - 1
    assert sim.union(window).value == LIMIT


def test_a_retired_member_that_was_not_dead_is_counted_when_it_overspends() -> None:
    sim = _simulation(13)
    _run(sim, 20)
    sim.consume("n2", 1)
    _run(sim, 50)
    decision = _retirement(sim, "n2")  # n2 is alive: an operator's mistake
    for node_id in ("n0", "n1"):
        core = sim.nodes[node_id].core
        assert core is not None
        assert core.retire(decision, sim._rule_of, sim.now_ms) == 1
    for _ in range(4):
        sim.consume("n2", 1)
    _run(sim, 100)
    for node_id in ("n0", "n1"):
        core = sim.nodes[node_id].core
        assert core is not None
        assert core.counters.retired_overspent == 4, node_id


def test_a_retirement_names_only_rows_of_its_member() -> None:
    counter = BoundedCounter("n1~00000000/00000000")
    counter.grant(3)
    row = RetiredRow(KEY, 0, "n1~00000000/00000000", counter)
    frame = Retirement("n2", "n0", 5, (row,)).to_bytes()
    with pytest.raises(DecodeError, match="not a row of"):
        decode_retirement(frame)
    good = Retirement("n1", "n0", 5, (row,))
    assert decode_retirement(good.to_bytes()) == good


def test_a_fresh_run_of_the_heir_does_not_reissue_the_rights_again() -> None:
    sim = _simulation(14)
    _run(sim, 20)
    sim.consume("n2", 2)
    _run(sim, 50)
    sim.crash("n2", keep_data=False)
    decision = _retirement(sim, "n2")
    _retire_everywhere(sim, decision)
    _run(sim, 50)
    heir = sim.nodes["n0"].core
    assert heir is not None
    assert heir.counters.rights_reclaimed == LIMIT // 3 - 2
    # The heir crashes with its data directory lost and starts again; it applies the decision
    # (from the strong log) before any peer's state reached it.
    sim.crash("n0", keep_data=False)
    _run(sim, 10)
    sim.restart("n0")
    fresh = sim.nodes["n0"].core
    assert fresh is not None
    assert fresh.retire(decision, sim._rule_of, sim.now_ms) == 1
    assert fresh.counters.rights_reclaimed == 0
    _spend_everything(sim, ["n0", "n1"])
    assert sim.union(sim.now_ms // WINDOW_MS).value <= LIMIT


def test_a_copy_too_big_for_one_frame_is_gathered_in_parts_lost_or_repeated() -> None:
    """The gatherer joins every part of a peer's copy, whatever order they come in, once; an
    ask lost on the way is sent again the next round."""
    rule = PolicyRule(
        "quota.*", "bounded", limit=90, window_ms=WINDOW_MS, members=("m", "n0", "n1")
    )
    keys = [f"quota.k{i:05d}" for i in range(6_000)]
    frames: dict[str, list[tuple[str, bytes]]] = {"m": [], "n0": [], "n1": []}

    def core(node_id: str) -> BoundedKeys:
        def send(peer: str, frame: bytes) -> None:
            frames[peer].append((node_id, frame))

        return BoundedKeys(
            node_id, f"{node_id}~0001", random.Random(node_id), send, started_ms=0, timeout_ms=500
        )

    dead, gatherer, peer = core("m"), core("n0"), core("n1")
    now = WINDOW_MS + 5
    for key in keys:
        assert dead.rights(key, rule, now) == 30
    dead.tick(now, 0, ["n1"], gossip_round=True)  # m's state reaches n1 only (many frames)
    for source, frame in frames["n1"]:
        peer.step(source, frame, lambda key: rule, now, 0)
    assert len(peer.rows_of("m")) == len(keys)
    results: list[tuple[object, object]] = []
    gatherer.gather_rows("m", ["n1"], 0, 1_000, lambda rows, error: results.append((rows, error)))
    frames["n1"].clear()  # the first ask is lost
    gatherer.tick(now, 100, ["n1"], gossip_round=True)
    asks, frames["n1"] = frames["n1"], []
    assert len(asks) == 1
    peer.step(asks[0][0], asks[0][1], lambda key: rule, now, 0)
    parts, frames["n0"] = frames["n0"], []
    assert len(parts) > 1
    for source, frame in reversed(parts):
        assert results == [], "done before every part came"
        gatherer.step(source, frame, lambda key: rule, now, 100)
    gatherer.step(*parts[0], lambda key: rule, now, 100)  # a repeated part changes nothing
    [(rows, error)] = results
    assert error is None
    assert isinstance(rows, list)
    assert {(row.key, row.replica) for row in rows} == {(key, dead.replica) for key in keys}
    assert gatherer.counters.malformed == 0


def test_a_gathering_not_answered_in_time_fails_unavailable_naming_the_silent_peer() -> None:
    sent: list[str] = []
    gatherer = BoundedKeys(
        "n0",
        "n0~0001",
        random.Random(3),
        lambda peer, _: sent.append(peer),
        started_ms=0,
        timeout_ms=500,
    )
    results: list[tuple[object, object]] = []
    gatherer.gather_rows("m", ["n1", "n2"], 0, 1_000, lambda rows, e: results.append((rows, e)))
    assert sorted(sent) == ["n1", "n2"]
    gatherer.tick(0, 999, [])
    assert results == []
    gatherer.tick(0, 1_000, [])
    [(rows, error)] = results
    assert rows is None
    assert isinstance(error, UnavailableError)
    assert "['n1', 'n2']" in str(error)
    assert gatherer.counters.gatherings_failed == 1


def test_rows_frames_of_the_wrong_shape_are_decode_errors() -> None:
    counter = BoundedCounter("x~0001")
    counter.grant(1)
    row = [KEY, 0, "x~0001", counter.to_bytes()]
    bad = [
        [["n1~0001", [7, "m", 0, 1, [row]]]],  # a row of another member
        [["n1~0001", [7, "m", 1, 1, []]]],  # part 1 of 1
        [["n1~0001", [7, "m", 0, 1]]],  # no rows
        [["n1~0001", [-1, "m"]]],  # a negative nonce (as an ask)
    ]
    tags = [wire.Tag.BOUNDED_ROWS] * 3 + [wire.Tag.BOUNDED_ROWS_ASK]
    for tag, [body] in zip(tags, bad, strict=True):
        with pytest.raises(DecodeError):
            decode_bounded(wire.encode(tag, body))


def test_the_retirements_a_node_applied_outlive_a_restart_with_its_data_directory() -> None:
    """The strong log keeps decisions only for its retention; a node's own log and snapshot
    keep those it applied, so a restarted heir still re-issues rights that reach the retired
    row later, and a restarted node still counts the row's overspending."""
    sim = _simulation(15)
    _run(sim, 20)
    sim.consume("n2", 3)
    _run(sim, 50)
    sim.crash("n2", keep_data=False)
    decision = _retirement(sim, "n2")
    assert _retire_everywhere(sim, decision) == [1] * len(sim.live())
    _run(sim, 50)
    window = sim.now_ms // WINDOW_MS
    dead_row = decision.rows[0].replica
    n1 = sim.nodes["n1"]
    n1.disk = n1.core.snapshot_records() if n1.core else []  # the decision in a snapshot
    for node_id in ("n0", "n1"):  # the heir from its log, n1 from its snapshot
        sim.crash(node_id, keep_data=True)
        sim.restart(node_id)
        core = sim.nodes[node_id].core
        assert core is not None
        assert core.counters.rows_retired == 1, node_id
    _run(sim, 50)
    # A transfer answering the dead node's old request reaches its row after the restarts.
    n1_core = sim.nodes["n1"].core
    assert n1_core is not None
    state = n1_core._windows[(KEY, window)]
    state.counter.transfer(5, dead_row)
    n1_core._changed(KEY, window, state)
    _run(sim, 100)
    heir = sim.nodes["n0"].core
    assert heir is not None
    assert heir.counters.rights_reclaimed == 5, "the restarted heir forgot the decision"
    assert _spend_everything(sim, ["n0", "n1"]) > 0
    assert sim.union(window).value == LIMIT
