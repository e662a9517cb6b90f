"""Agent processes: an eventual write answered 200 survives a SIGKILL right after the answer.

The node syncs its local write-ahead log before answering, so a kill at any moment after the
answer loses nothing: the restarted node holds every acknowledged write, and so do its peers
once gossip ran. The victim is killed twice in quick succession, each time right after a 200
and before its next gossip round could have spread the write.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from bench.processes import Agent, make_agents, running

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(120)]

CONVERGENCE_DEADLINE_S = 30.0
KEY = "orders.placed"


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[Agent]]:
    with running(make_agents(tmp_path, ["n1", "n2", "n3"])) as started:
        yield started


def _total(agent: Agent) -> float:
    try:
        answer = agent.request("GET", f"/v1/keys/{quote(KEY, safe='')}")
    except OSError:
        return float("nan")
    return float(sum(window["value"] for window in answer["windows"]))


def _write(agent: Agent, amount: int) -> None:
    body = json.dumps({"op": "add", "value": amount}).encode()
    answer = agent.request("POST", f"/v1/keys/{quote(KEY, safe='')}", body)
    assert answer["accepted"] == 1, answer


def _wait_for_total(agents: list[Agent], expected: float) -> None:
    end = time.monotonic() + CONVERGENCE_DEADLINE_S
    totals: list[float] = []
    while time.monotonic() < end:
        totals = [_total(agent) for agent in agents]
        if all(total == expected for total in totals):
            return
        time.sleep(0.2)
    pytest.fail(f"acknowledged {expected}, nodes hold {totals}")


def test_acknowledged_writes_survive_sigkill_right_after_the_answer(
    agents: list[Agent],
) -> None:
    rng = random.Random(13)
    victim = agents[1]
    acknowledged = 0
    replica = victim.request("GET", "/v1/status")["replica"]
    for life in range(2):
        for _ in range(rng.randint(20, 60)):
            amount = rng.randint(1, 9)
            _write(victim, amount)  # returns once the 200 arrived
            acknowledged += amount
        victim.kill()  # right after the last 200: no gossip round can have run since
        victim.start()
        victim.wait_ready(20.0)
        assert _total(victim) == acknowledged, f"life {life}: the restarted node lost writes"
        # Its log covered everything it sent: it resumes its replica slot after the crash.
        assert victim.request("GET", "/v1/status")["replica"] == replica
    _wait_for_total(agents, acknowledged)
