"""The bounded mode under faults: the limit holds, acknowledged consumption is kept (also
across crashes, when the node keeps its data directory: it resumes its row from its log), and
rights reach a node with demand within a few gossip rounds once the cluster is healthy.

``CRDTSTREAM_BOUNDED_SEEDS`` sets the number of seeds (default 30; run 200 or more locally).
"""

from __future__ import annotations

import os
from collections import Counter

from crdtstream.engine.tickets import Ticket
from tests.node.bounded_sim import ROUND_MS, BoundedSimulation, run

SEEDS = int(os.environ.get("CRDTSTREAM_BOUNDED_SEEDS", "30"))
ROUNDS_TO_RIGHTS_MAX = 4
"""Gossip rounds a healthy cluster may take to give a node the rights it asks for."""


def test_the_limit_holds_and_rights_move_under_every_fault() -> None:
    faults: Counter[str] = Counter()
    rounds: list[int] = []
    consumed = refused = 0
    for seed in range(SEEDS):
        _, outcome = run(seed)
        faults.update(outcome.faults)
        rounds.extend(outcome.rounds_to_rights)
        consumed += sum(outcome.acked.values())
        refused += outcome.refused
        for value in outcome.rounds_to_rights:
            assert value <= ROUNDS_TO_RIGHTS_MAX, f"seed={seed}: rights took {value} rounds"
    # The faults the runs claim to exercise did happen.
    for fault in (
        "lost",
        "duplicated",
        "reordered",
        "partitioned",
        "crash_kept_data",
        "crash_wiped_data",
        "crash_lost_unsynced",
        "row_resumed",
        "snapshot",
        "restart",
        "partition_split",
        "partition_isolate",
    ):
        assert faults[fault] > 0, f"no {fault} in {SEEDS} seeds: {dict(faults)}"
    assert consumed > 0, "nothing was consumed"
    assert refused > 0, "the quota was never exhausted"
    assert rounds, "no healthy run measured the movement of rights"
    print(
        f"seeds={SEEDS} consumed={consumed} refused={refused} rounds_to_rights "
        f"max={max(rounds)} mean={sum(rounds) / len(rounds):.2f} (round {ROUND_MS} ms) "
        f"faults={dict(faults)}"
    )


def test_rights_flow_to_a_steady_user_before_it_runs_short() -> None:
    """Demand hints on gossip, not only requests on failure: a node that keeps consuming past
    its share is answered locally every time, its idle peers passing it rights ahead of need."""
    sim = BoundedSimulation(5, nodes=3, limit=90)
    sim.faulty = False
    tickets: list[Ticket] = []
    for step in range(400):
        if step % 5 == 0 and len(tickets) < 60:
            ticket = sim.consume("n0", 1)
            assert ticket is not None
            assert ticket.done, f"consumption {len(tickets)} had to wait for rights"
            tickets.append(ticket)
        sim.step()
    assert all(ticket.error is None for ticket in tickets)
    n0 = sim.nodes["n0"].core
    assert n0 is not None
    assert n0.counters.requests_sent == 0
    given = sum(node.core.counters.rights_given for node in sim.nodes.values() if node.core)
    assert given >= 60 - 30
