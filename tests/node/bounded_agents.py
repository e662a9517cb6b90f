"""Agent processes sharing a bounded quota: clients that consume at one agent, and waits."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest

from bench.processes import Agent, make_agents, running

KEY = "quota.api"
START_MARGIN_MS = 12_000
"""Time the agents have to start before the window opens (they take their share only of a
window that opens after they started)."""
DEADLINE_S = 40.0


def window_ms_opening_after(opens_at_ms: int) -> int:
    """A window size from 40 s to 60 s whose next window opens soon after ``opens_at_ms``: the
    test then runs inside that one window without waiting up to a minute for it."""
    return min(range(40_000, 60_001), key=lambda size: -opens_at_ms % size)


def read_quota(agent: Agent) -> dict[str, int]:
    """The open window of the quota as ``agent`` sees it: value, limit and its rights."""
    answer = agent.request("GET", f"/v1/keys/{quote(KEY, safe='')}")
    return {name: int(answer[name]) for name in ("value", "limit", "rights")}


class Clients:
    """Threads that consume one unit at a time at one agent, counting what was answered."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked = 0
        self.acked_at: dict[str, list[float]] = {}  # node id -> when each answer came
        self.in_flight_at_kill = 0  # sent, never answered: the kill came first
        self.refused = 0
        self.unexpected: list[str] = []  # answers other than done or refused for lack of rights
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.pause_s = 0.0
        """Each client's wait after an answer (0: as fast as answers come)."""

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
                self.acked_at.setdefault(agent.node_id, []).append(time.monotonic())
            if self.pause_s:
                time.sleep(self.pause_s)

    def join(self, threads: list[threading.Thread]) -> None:
        for thread in threads:
            thread.join(timeout=30)
            assert not thread.is_alive()


def wait_for_window(window_ms: int) -> None:
    now_ms = time.time() * 1000
    opens_ms = -(-now_ms // window_ms) * window_ms
    assert opens_ms - now_ms <= START_MARGIN_MS + 1_000, "the agents started too late"
    time.sleep((opens_ms - now_ms) / 1000 + 0.5)


def converged(agents: list[Agent]) -> int:
    end = time.monotonic() + DEADLINE_S
    values: list[int] = []
    while time.monotonic() < end:
        values = [read_quota(agent)["value"] for agent in agents]
        if len(set(values)) == 1:
            return values[0]
        time.sleep(0.2)
    pytest.fail(f"no convergence: nodes see {values}")


@contextmanager
def bounded_agents(
    root: Path, names: list[str], limit: int, *, voters: bool
) -> Iterator[tuple[list[Agent], int]]:
    """Agents with data directories sharing the bounded quota ``quota.*`` (``limit`` per
    window, every agent a member; all of them Raft voters when ``voters``), started so that a
    window opens soon after they are ready: yields the agents and the window size."""
    window_ms = window_ms_opening_after(int(time.time() * 1000) + START_MARGIN_MS)
    agents = make_agents(root, names)
    members = ", ".join(f'"{name}"' for name in names)
    voter_args = [
        item
        for agent in agents
        for item in ("--raft-voter", f"{agent.node_id}=tcp://127.0.0.1:{agent.gossip_port}")
    ]
    for agent in agents:
        config = root / f"{agent.node_id}.toml"
        config.write_text(
            f'[[policy]]\npattern = "quota.*"\nmode = "bounded"\nlimit = {limit}\n'
            f"members = [{members}]\nwindow_ms = {window_ms}\n"
            "[node]\nbounded_timeout_ms = 1000\n"
        )
        agent.extra_args = [*(voter_args if voters else []), "--config", str(config)]
    with running(agents) as started:
        yield started, window_ms
