"""Three Raft voters as processes: one strong write with an ``Idempotency-Key`` is retried at
each node in turn, the leader killed with SIGKILL (and restarted) between attempts; it is
applied exactly once, every attempt is answered with the first result, and the same key with
another body is refused (400) at every node. A keyed quorum write whose node is SIGKILLed in the
middle of the first attempt, then retried at every node, is applied exactly once too."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.processes import Agent, make_voters, running

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(180)]

KEY = "quota.retried"
EVENT_TIME_MS = 1_700_000_000_000
BODY = {"op": "add", "value": 5, "timestamp_ms": EVENT_TIME_MS}
IDEMPOTENCY_KEY = "order-17"


@pytest.fixture
def voters(tmp_path: Path) -> Iterator[list[Agent]]:
    agents = make_voters(tmp_path, ["v1", "v2", "v3"], "quota.*=strong")
    with running(agents) as started:
        yield started


def _post(agent: Agent, body: dict[str, object], key: str = KEY) -> tuple[int, dict[str, Any]]:
    """Status and JSON answer of one keyed write (a connection error raises OSError)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{agent.http_port}/v1/keys/{key}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Idempotency-Key": IDEMPOTENCY_KEY, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _post_until_answered(agent: Agent, body: dict[str, object]) -> tuple[int, dict[str, Any]]:
    """Retry at ``agent`` while the cluster has no leader (503) or the node is starting."""
    end = time.monotonic() + 30.0
    while True:
        try:
            status, answer = _post(agent, body)
        except OSError:
            status, answer = 0, {}
        if status not in (0, 503) or time.monotonic() > end:
            return status, answer
        time.sleep(0.2)


def _leader(agents: list[Agent], deadline_s: float = 30.0) -> Agent:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for agent in agents:
            try:
                if agent.request("GET", "/v1/status")["raft"]["role"] == "leader":
                    return agent
            except OSError:
                continue
        time.sleep(0.1)
    raise AssertionError(f"no leader elected within {deadline_s} s")


def _total(agent: Agent, key: str = KEY) -> int:
    answer = agent.request("GET", f"/v1/keys/{key}")
    return int(sum(window["value"] for window in answer["windows"]))


def test_a_keyed_retry_at_every_node_across_leader_kills_is_applied_once(
    voters: list[Agent],
) -> None:
    first_leader = _leader(voters)
    order = [first_leader, *(agent for agent in voters if agent is not first_leader)]
    answers = []
    log = []
    for attempt, target in enumerate(order):
        victim = None
        if attempt:
            victim = _leader(voters)
            victim.kill()
            log.append(f"killed leader {victim.node_id}")
            if victim is target:
                victim.start()
                victim.wait_ready(20.0)
                victim = None
        status, answer = _post_until_answered(target, BODY)
        log.append(f"attempt at {target.node_id}: {status} {answer}")
        assert status == 200, log
        answers.append(answer)
        if victim is not None:
            victim.start()
            victim.wait_ready(20.0)
    assert all(answer == answers[0] for answer in answers), log
    assert answers[0]["value"] == 5, log
    for agent in voters:
        status, answer = _post_until_answered(agent, {**BODY, "value": 6})
        assert status == 400, (agent.node_id, status, answer, log)
        assert "used for another request" in answer["error"]
    totals = {agent.node_id: _total(agent) for agent in voters}
    assert set(totals.values()) == {5}, (totals, log)


QUORUM_KEY = "q.orders"
QUORUM_BODY = {"op": "add", "value": 5}  # stamped now by the node: a retry names no time


@pytest.mark.parametrize("kill_after_s", [0.0, 0.01, 0.02, 0.04])
def test_a_keyed_quorum_write_whose_node_is_killed_mid_request_is_applied_once(
    tmp_path: Path, kill_after_s: float
) -> None:
    agents = make_voters(tmp_path, ["v1", "v2", "v3"], "q.*=quorum")
    with running(agents):
        _leader(agents)
        holder = agents[0]
        log: list[str] = []

        def first_attempt() -> None:
            try:
                log.append(f"first attempt: {_post(holder, QUORUM_BODY, QUORUM_KEY)}")
            except OSError as error:
                log.append(f"first attempt: {error!r}")

        attempt = threading.Thread(target=first_attempt)
        attempt.start()
        time.sleep(kill_after_s)
        holder.kill()
        attempt.join(timeout=15)
        holder.start()
        holder.wait_ready(20.0)
        answers = []
        for agent in [*agents[1:], holder]:
            end = time.monotonic() + 30.0
            while True:
                try:
                    status, answer = _post(agent, QUORUM_BODY, QUORUM_KEY)
                except OSError as error:
                    status, answer = 0, {"error": repr(error)}
                log.append(f"retry at {agent.node_id}: {status} {answer}")
                if status == 200 or time.monotonic() > end:
                    break
                assert status in (0, 503), log
                time.sleep(0.2)
            assert status == 200, log
            answers.append(answer)
        assert all(answer == answers[0] for answer in answers), log
        assert answers[0]["accepted"] == 1, log
        end = time.monotonic() + 15.0
        while True:  # every node converges on the one write
            totals = {agent.node_id: _total(agent, QUORUM_KEY) for agent in agents}
            if set(totals.values()) == {5} or time.monotonic() > end:
                break
            time.sleep(0.2)
        assert set(totals.values()) == {5}, (totals, log)
