"""Agent processes: a bounded key consumed on every node while one node is SIGKILLed.

Three agents with data directories share a quota; clients consume one unit at a time on every
node. One node is killed in the middle of the traffic and restarted. Its local log held every
consumption it answered and every transfer it sent, so after convergence the key's value equals
the acknowledged consumptions (plus, at most, those in flight at the kill: applied and logged,
but the answer never left), the limit is never exceeded, and the restarted node resumes its row:
its rights are spent after the restart, and the whole quota is used in the end.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from bench.processes import Agent, make_agents, running

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(150)]

KEY = "quota.api"
LIMIT = 600
NAMES = ["n1", "n2", "n3"]
START_MARGIN_MS = 12_000
"""Time the agents have to start before the window opens (they take their share only of a
window that opens after they started)."""
DEADLINE_S = 40.0


def _window_ms(opens_at_ms: int) -> int:
    """A window size from 40 s to 60 s whose next window opens soon after ``opens_at_ms``: the
    test then runs inside that one window without waiting up to a minute for it."""
    return min(range(40_000, 60_001), key=lambda size: -opens_at_ms % size)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[Agent], int]]:
    window_ms = _window_ms(int(time.time() * 1000) + START_MARGIN_MS)
    agents = make_agents(tmp_path, NAMES)
    members = ", ".join(f'"{name}"' for name in NAMES)
    for agent in agents:
        config = tmp_path / f"{agent.node_id}.toml"
        config.write_text(
            f'[[policy]]\npattern = "quota.*"\nmode = "bounded"\nlimit = {LIMIT}\n'
            f"members = [{members}]\nwindow_ms = {window_ms}\n"
            "[node]\nbounded_timeout_ms = 1000\n"
        )
        agent.extra_args = ["--config", str(config)]
    with running(agents) as started:
        yield started, window_ms


def _read(agent: Agent) -> dict[str, int]:
    answer = agent.request("GET", f"/v1/keys/{quote(KEY, safe='')}")
    return {name: int(answer[name]) for name in ("value", "limit", "rights")}


class Clients:
    """Threads that consume one unit at a time at one agent, counting what was answered."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked = 0
        self.in_flight_at_kill = 0  # sent, never answered: the kill came first
        self.refused = 0
        self.unexpected: list[str] = []  # answers other than done or refused for lack of rights
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, agent: Agent, count: int) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._consume, args=(agent,)) for _ in range(count)]
        for thread in threads:
            thread.start()
        self.threads.extend(threads)
        return threads

    def _consume(self, agent: Agent) -> None:
        body = json.dumps({"op": "consume", "value": 1}).encode()
        while not self.stop.is_set():
            try:
                answer = agent.request("POST", f"/v1/keys/{quote(KEY, safe='')}", body)
            except urllib.error.HTTPError as error:
                text = error.read().decode()
                with self.lock:
                    if error.code == 400 and "no_rights" in text:
                        self.refused += 1
                    else:
                        self.unexpected.append(f"{error.code} {text}")
                time.sleep(0.05)
                continue
            except OSError:  # the agent was killed with this consumption in flight
                with self.lock:
                    self.in_flight_at_kill += 1
                return
            assert answer["applied"] is True, answer
            with self.lock:
                self.acked += 1

    def join(self, threads: list[threading.Thread]) -> None:
        for thread in threads:
            thread.join(timeout=30)
            assert not thread.is_alive()


def _wait_for_window(window_ms: int) -> None:
    now_ms = time.time() * 1000
    opens_ms = -(-now_ms // window_ms) * window_ms
    assert opens_ms - now_ms <= START_MARGIN_MS + 1_000, "the agents started too late"
    time.sleep((opens_ms - now_ms) / 1000 + 0.5)


def _converged(agents: list[Agent]) -> int:
    end = time.monotonic() + DEADLINE_S
    values: list[int] = []
    while time.monotonic() < end:
        values = [_read(agent)["value"] for agent in agents]
        if len(set(values)) == 1:
            return values[0]
        time.sleep(0.2)
    pytest.fail(f"no convergence: nodes see {values}")


def test_sigkill_among_bounded_consumers_loses_nothing_and_strands_nothing(
    cluster: tuple[list[Agent], int],
) -> None:
    agents, window_ms = cluster
    _wait_for_window(window_ms)
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
        if all(_read(agent)["value"] == LIMIT for agent in agents):
            break
        time.sleep(0.2)
    clients.stop.set()
    clients.join(clients.threads)
    assert not clients.unexpected, clients.unexpected
    value = _converged(agents)
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
        assert _read(agent) == {"value": LIMIT, "limit": LIMIT, "rights": 0}
