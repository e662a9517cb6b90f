"""Agent processes: a node SIGKILLed among bounded consumers, gone for good, and its rows retired.

Three agents, all Raft voters with data directories, share a quota; clients consume one unit
at a time on every node. One node is killed in the middle of the traffic and never comes back
(its data directory is deleted). The rights it held are stranded until an operator removes it
and retires its rows with the command line (``crdtstream remove-member ID --force
--retire-bounded``): the survivor gathers the other's copy of the rows, the decision goes
through the Raft log, the heir re-issues what the dead row held, and the survivors then spend
the whole quota. Every survivor counts exactly the limit, and what clients were told was
consumed exceeds it by at most the dead node's answers that no survivor had heard of: those of
its last moments before the kill.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.processes import Agent
from tests.node.bounded_agents import (
    DEADLINE_S,
    Clients,
    bounded_agents,
    converged,
    read_quota,
    wait_for_window,
)

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(150)]

LIMIT = 600
NAMES = ["n1", "n2", "n3"]
UNHEARD_S = 0.15
"""How long before the kill the dead node's answers may have been unheard by every survivor:
its push interval between gossip rounds (20 ms), with room for a loaded machine."""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[Agent], int]]:
    with bounded_agents(tmp_path, NAMES, LIMIT, voters=True) as started:
        yield started


def test_a_dead_nodes_rights_come_back_through_a_retirement(
    cluster: tuple[list[Agent], int],
) -> None:
    agents, window_ms = cluster
    wait_for_window(window_ms)
    window = int(time.time() * 1000) // window_ms
    first, victim, last = agents
    survivors = [first, last]
    clients = Clients()
    clients.pause_s = 0.02  # slow enough that the victim dies with rights left
    victim_threads = clients.start(victim, 3)
    survivor_threads = [thread for agent in survivors for thread in clients.start(agent, 1)]
    end = time.monotonic() + DEADLINE_S
    started = time.monotonic()
    while time.monotonic() < end:
        if time.monotonic() - started >= 1.0 and len(clients.acked_at.get("n2", [])) >= 30:
            break
        time.sleep(0.005)
    assert len(clients.acked_at.get("n2", [])) >= 30, "the traffic did not get going"
    victim.kill()  # gone for good, in the middle of its consumers' traffic
    killed_at = time.monotonic()
    shutil.rmtree(victim.data_dir)
    clients.join(victim_threads)
    clients.pause_s = 0.0
    # The survivors run dry of their own rights while the victim's stay stranded with its row.
    stalled_value = 0
    while time.monotonic() < end:
        views = [read_quota(agent) for agent in survivors]
        if clients.refused and all(view["rights"] == 0 for view in views):
            stalled_value = views[0]["value"]
            break
        time.sleep(0.2)
    assert stalled_value < LIMIT, "nothing was stranded: the test proves nothing"
    command = [
        sys.executable,
        "-m",
        "crdtstream",
        "remove-member",
        victim.node_id,
        "--node",
        f"http://127.0.0.1:{first.http_port}",
        "--force",
        "--retire-bounded",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"member {victim.node_id}: 1 bounded rows retired" in done.stdout, done.stdout
    while time.monotonic() < end:
        if all(read_quota(agent)["value"] == LIMIT for agent in survivors):
            break
        time.sleep(0.2)
    clients.stop.set()
    clients.join(survivor_threads)
    assert not clients.unexpected, clients.unexpected
    value = converged(survivors)
    assert int(time.time() * 1000) // window_ms == window, "the window rolled over"
    assert value == LIMIT, f"rights stranded: {value} of {LIMIT} spent"
    for agent in survivors:
        assert read_quota(agent) == {"value": LIMIT, "limit": LIMIT, "rights": 0}
        bounded = agent.request("GET", "/v1/status")["bounded"]
        assert bounded["rows_retired"] == 1, agent.node_id
        assert bounded["retired_overspent"] == 0, agent.node_id
        assert bounded["entries_over_limit"] == 0, agent.node_id
    reclaimed = sum(
        agent.request("GET", "/v1/status")["bounded"]["rights_reclaimed"] for agent in survivors
    )
    assert reclaimed > 0, "the heir re-issued nothing"
    victim_acked = clients.acked_at.get(victim.node_id, [])
    last_moments = sum(1 for at in victim_acked if at >= killed_at - UNHEARD_S)
    overshoot = clients.acked - LIMIT
    print(
        f"acked={clients.acked} victim_acked={len(victim_acked)} "
        f"last_moments={last_moments} reclaimed={reclaimed} overshoot={overshoot}"
    )
    assert overshoot <= last_moments, (overshoot, last_moments)
