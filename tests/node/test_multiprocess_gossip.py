"""Three agent processes over ZeroMQ on loopback: exact sums survive a kill -9 and restart."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from bench.processes import Agent, make_agents, running
from crdtstream.cli import main
from tests.node.malformed import assert_no_malformed

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(120)]

CONVERGENCE_DEADLINE_S = 30.0


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[Agent]]:
    with running(make_agents(tmp_path, ["n1", "n2", "n3"])) as started:
        yield started


def _total(agent: Agent, key: str) -> float:
    try:
        answer = agent.request("GET", f"/v1/keys/{quote(key, safe='')}")
    except OSError:
        return float("nan")
    return float(sum(window["value"] for window in answer["windows"]))


def _wait_for_total(agents: list[Agent], key: str, expected: float) -> None:
    end = time.monotonic() + CONVERGENCE_DEADLINE_S
    totals: list[float] = []
    while time.monotonic() < end:
        totals = [_total(agent, key) for agent in agents]
        if all(total == expected for total in totals):
            return
        time.sleep(0.2)
    pytest.fail(f"no convergence on {key}: expected {expected}, got {totals}")


def _ingest(agent: Agent, lines: list[str]) -> int:
    answer = agent.request("POST", "/v1/ingest", "\n".join(lines).encode())
    assert answer["rejected"] == 0, answer
    accepted: int = answer["accepted"]
    return accepted


def test_exact_sums_converge_across_kill_and_restart(
    agents: list[Agent], capsys: pytest.CaptureFixture[str]
) -> None:
    expected = 0.0
    for round_number in range(3):
        for index, agent in enumerate(agents):
            amount = 10 * round_number + index + 1
            assert _ingest(agent, [f"jobs.done:{amount}|c|#env:test"] * 5) == 5
            expected += 5 * amount
    key = "jobs.done#env:test"
    _wait_for_total(agents, key, expected)

    victim = agents[1]
    victim.kill()
    assert _ingest(agents[0], ["jobs.done:7|c|#env:test"]) == 1
    expected += 7
    victim.start()
    victim.wait_ready(20.0)
    assert _ingest(victim, ["jobs.done:100|c|#env:test"]) == 1
    expected += 100
    _wait_for_total(agents, key, expected)
    status = victim.request("GET", "/v1/status")
    assert set(status["members"]) >= {"n1", "n2", "n3"}
    node_url = f"http://127.0.0.1:{victim.http_port}"
    assert main(["query", key, "--node", node_url, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert sum(window["value"] for window in answer["windows"]) == expected
    assert main(["status", "--node", node_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["node_id"] == "n2"
    assert main(["query", "never.written", "--node", node_url]) == 1
    statuses = {agent.node_id: agent.request("GET", "/v1/status") for agent in agents}
    assert_no_malformed(statuses, "three agents, one killed and restarted:")
