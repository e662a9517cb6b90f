"""Agent processes: a bounded key consumed on every node while one node is SIGKILLed.

Three agents with data directories share a quota; clients consume one unit at a time on every
node. One node is killed in the middle of the traffic and restarted. Its local log held every
consumption it answered and every transfer it sent, so after convergence the key's value equals
the acknowledged consumptions (plus, at most, those in flight at the kill: applied and logged,
but the answer never left), the limit is never exceeded, and the restarted node resumes its row:
its rights are spent after the restart, and the whole quota is used in the end.
"""

from __future__ import annotations

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


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[Agent], int]]:
    with bounded_agents(tmp_path, NAMES, LIMIT, voters=False) as started:
        yield started


def test_sigkill_among_bounded_consumers_loses_nothing_and_strands_nothing(
    cluster: tuple[list[Agent], int],
) -> None:
    agents, window_ms = cluster
    wait_for_window(window_ms)
    window = int(time.time() * 1000) // window_ms
    victim = agents[1]
    row = victim.request("GET", "/v1/status")["bounded_replica"]
    clients = Clients()
    victim_threads = clients.start(victim, 3)
    for agent in agents:
        if agent is not victim:
            clients.start(agent, 2)
    end = time.monotonic() + DEADLINE_S
    while clients.acked < LIMIT // 4 and time.monotonic() < end:
        time.sleep(0.005)
    assert clients.acked >= LIMIT // 4, "the traffic did not get going"
    victim.kill()  # consumptions in flight: some answered just before, some never
    clients.join(victim_threads)
    killed_in_flight = clients.in_flight_at_kill
    victim.start()
    victim.wait_ready(20.0)
    status = victim.request("GET", "/v1/status")
    assert status["bounded_replica"] == row, "the restarted node took a fresh row"
    assert status["bounded"]["windows_resumed"] >= 1
    # Consume the rest of the quota everywhere: the restarted node's rights too.
    clients.start(victim, 3)
    while time.monotonic() < end:
        if all(read_quota(agent)["value"] == LIMIT for agent in agents):
            break
        time.sleep(0.2)
    clients.stop.set()
    clients.join(clients.threads)
    assert not clients.unexpected, clients.unexpected
    value = converged(agents)
    assert int(time.time() * 1000) // window_ms == window, "the window rolled over"
    assert clients.in_flight_at_kill == killed_in_flight, "an agent failed after the kill"
    assert clients.acked <= value <= clients.acked + killed_in_flight, (
        value,
        clients.acked,
        killed_in_flight,
    )
    print(
        f"acked={clients.acked} in_flight_at_kill={killed_in_flight} "
        f"refused={clients.refused} value={value}"
    )
    assert value == LIMIT, f"rights stranded: {value} of {LIMIT} spent"
    for agent in agents:
        assert read_quota(agent) == {"value": LIMIT, "limit": LIMIT, "rights": 0}
