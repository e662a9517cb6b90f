"""Agent processes: an eventual write answered 200 survives a SIGKILL right after the answer.

The node syncs its local write-ahead log before answering, so a kill at any moment after the
answer loses nothing: the restarted node holds every acknowledged write, and so do its peers
once gossip ran. The victim is killed twice in quick succession, each time right after a 200
and before its next gossip round could have spread the write.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
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
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return 0.0  # the node holds no write of the key
        return float("nan")
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


def _converged_total(agents: list[Agent]) -> float:
    end = time.monotonic() + CONVERGENCE_DEADLINE_S
    totals: list[float] = []
    while time.monotonic() < end:
        totals = [_total(agent) for agent in agents]
        if len(set(totals)) == 1 and totals[0] == totals[0]:  # equal, and not NaN
            return totals[0]
        time.sleep(0.2)
    pytest.fail(f"no convergence: nodes hold {totals}")


def test_sigkill_among_concurrent_writes_loses_no_acknowledged_one(agents: list[Agent]) -> None:
    victim = agents[1]
    lock = threading.Lock()
    acknowledged = 0.0
    uncertain = 0.0  # sent, but the answer never came: the kill may have come before or after
    killed = threading.Event()

    def client(seed: int) -> None:
        nonlocal acknowledged, uncertain
        rng = random.Random(seed)
        while not killed.is_set():
            amount = rng.randint(1, 9)
            try:
                _write(victim, amount)
            except OSError:
                with lock:
                    uncertain += amount
                return
            with lock:
                acknowledged += amount

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    try:
        while True:
            with lock:
                if acknowledged >= 500:
                    break
            time.sleep(0.001)
        victim.kill()  # writes are in flight: some answered just before, some never
        killed.set()
    finally:
        killed.set()
        for thread in threads:
            thread.join(timeout=10)
    victim.start()
    victim.wait_ready(20.0)
    total = _total(victim)
    assert acknowledged <= total <= acknowledged + uncertain, (total, acknowledged, uncertain)
    assert _converged_total(agents) == total
