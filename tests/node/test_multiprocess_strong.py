"""Three Raft voters as processes over ZeroMQ: a leader killed with SIGKILL mid-load and
restarted; the clients' history is linearizable and no acknowledged write is lost."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.processes import Agent, make_voters, running
from tests.checkers.linearizability import HistoryRecorder, Operation, assert_counter_history
from tests.node.malformed import assert_no_malformed

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(180)]

KEY = "quota.api"
LIMIT = 400
EVENT_TIME_MS = 1_700_000_000_000  # one fixed event time: every command lands in one window
CLIENTS = 4
LOAD_SECONDS = 8.0


class SharedRecorder(HistoryRecorder):
    """A history recorder that client threads can share."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def invoke(self, operation: Operation) -> int:
        with self._lock:
            return super().invoke(operation)

    def complete(self, handle: int, complete_time: float, result: int | bool | None) -> None:
        with self._lock:
            super().complete(handle, complete_time, result)

    def fail(self, handle: int) -> None:
        with self._lock:
            super().fail(handle)


@pytest.fixture
def voters(tmp_path: Path) -> Iterator[list[Agent]]:
    agents = make_voters(tmp_path, ["v1", "v2", "v3"], "quota.*=strong")
    with running(agents) as started:
        yield started


def _wait_for_leader(agents: list[Agent], deadline_s: float = 20.0) -> Agent:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        leader = _leader(agents)
        if leader is not None:
            return leader
        time.sleep(0.1)
    raise AssertionError(f"no leader elected within {deadline_s} s")


def _leader(agents: list[Agent]) -> Agent | None:
    for agent in agents:
        try:
            raft = agent.request("GET", "/v1/status")["raft"]
        except OSError:
            continue
        if raft["role"] == "leader":
            return agent
    return None


def _write(agent: Agent, body: dict[str, object]) -> dict[str, object] | str | None:
    """The answer; "refused" when the request never reached a node (it cannot have applied);
    None when the outcome is unknown (timeout, 503, connection lost mid-request)."""
    try:
        answer: dict[str, object] = agent.request(
            "POST", f"/v1/keys/{KEY}", json.dumps(body).encode()
        )
        return answer
    except urllib.error.URLError as error:
        if isinstance(error.reason, ConnectionRefusedError):
            return "refused"
        return None
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return None


def _read(agent: Agent) -> int | None:
    try:
        answer = agent.request("GET", f"/v1/keys/{KEY}")
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return 0
        return None
    except (urllib.error.URLError, OSError):
        return None
    return int(sum(window["value"] for window in answer["windows"]))


def _client(
    number: int, agents: list[Agent], recorder: HistoryRecorder, stop: threading.Event
) -> None:
    rng = random.Random(1_000 + number)
    while not stop.is_set():
        time.sleep(rng.uniform(0.01, 0.04))
        agent = rng.choice(agents)
        choice = rng.random()
        now = time.monotonic
        if choice < 0.3:
            handle = recorder.invoke(Operation(number, KEY, "read", now(), None))
            value = _read(agent)
            if value is None:
                recorder.fail(handle)  # a failed read changed nothing
            else:
                recorder.complete(handle, now(), value)
            continue
        amount = rng.randint(1, 5)
        conditional = choice < 0.8
        kind = "conditional_add" if conditional else "add"
        operation = Operation(
            number, KEY, kind, now(), None, amount=amount, limit=LIMIT if conditional else None
        )
        handle = recorder.invoke(operation)
        body: dict[str, object] = {"op": kind, "value": amount, "timestamp_ms": EVENT_TIME_MS}
        if conditional:
            body["limit"] = LIMIT
        answer = _write(agent, body)
        if answer == "refused":
            recorder.fail(handle)
        elif isinstance(answer, dict):
            recorder.complete(handle, now(), bool(answer["applied"]) if conditional else None)
        time.sleep(rng.uniform(0.01, 0.04))


def test_history_stays_linearizable_across_a_leader_kill(voters: list[Agent]) -> None:
    _wait_for_leader(voters)
    recorder = SharedRecorder()
    stop = threading.Event()
    threads = [
        threading.Thread(target=_client, args=(n, voters, recorder, stop), daemon=True)
        for n in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(LOAD_SECONDS / 2)
        victim = _wait_for_leader(voters)  # an election may be under way at this instant
        victim.kill()
        time.sleep(1.5)
        victim.start()
        victim.wait_ready(20.0)
        time.sleep(LOAD_SECONDS / 2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    history = recorder.history()
    final_values = {agent.node_id: _read(agent) for agent in voters}
    print(f"{len(history)} operations, final {final_values}")
    assert_counter_history(history, final_values)
    statuses = {agent.node_id: agent.request("GET", "/v1/status") for agent in voters}
    assert_no_malformed(statuses, "three voters, one killed and restarted:")
