"""Three agent processes over loopback, statsd lines over HTTP all along: one is killed with
SIGKILL mid-traffic and restarted, another paused with SIGSTOP for longer than the failure
detector's timeout and resumed. Every node's ``/v1/keys/...`` is polled throughout; a value
once reported final must never change, on any node."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.processes import Agent, make_agents, running

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(180)]

KEY = "fin.hits"
CONFIG = """
[window]
size_ms = 1000
allowed_lateness_ms = 500
retention_windows = 120

[gossip]
interval_ms = 50

[membership]
probe_interval_ms = 200
probe_timeout_ms = 100
"""
PAUSE_S = 6.0
"""Longer than the failure detector's longest suspicion timeout with these settings (4.8 s)."""


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[Agent]]:
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG)
    made = make_agents(tmp_path, ["n1", "n2", "n3"])
    for agent in made:
        agent.extra_args = ["--config", str(config)]
    with running(made) as started:
        try:
            yield started
        finally:
            for agent in started:  # a paused process must be able to die
                if agent.process is not None:
                    os.kill(agent.process.pid, signal.SIGCONT)


class FinalityWatch:
    """Polls every agent; remembers the first value reported final per window and every
    change after it."""

    def __init__(self, agents: list[Agent]) -> None:
        self.agents = agents
        self.final_values: dict[int, float] = {}
        self.promised: dict[str, set[int]] = {agent.node_id: set() for agent in agents}
        self.violations: list[str] = []
        self.finals_seen = 0
        self.lock = threading.Lock()

    def restarted(self, agent: Agent) -> None:
        with self.lock:
            self.promised[agent.node_id] = set()

    def poll(self, agent: Agent) -> None:
        try:
            answer = agent.request("GET", f"/v1/keys/{KEY}")
        except OSError:
            return  # down, paused or not serving yet
        with self.lock:
            promised = self.promised[agent.node_id]
            for window in answer["windows"]:
                start, value = int(window["start_ms"]), float(window["value"])
                if window["final"]:
                    self.finals_seen += 1
                    first = self.final_values.setdefault(start, value)
                    promised.add(start)
                elif start in promised:
                    first = self.final_values[start]
                else:
                    continue
                if value != first:
                    self.violations.append(
                        f"{agent.node_id} window {start}: final {first}, now {value} "
                        f"(final={window['final']})"
                    )


def _write_traffic(agents: list[Agent], stop: threading.Event, counts: dict[str, int]) -> None:
    rng = random.Random(7)
    while not stop.is_set():
        agent = rng.choice(agents)
        lines = "\n".join(f"{KEY}:1|c" for _ in range(rng.randint(1, 5))).encode()
        try:
            answer = agent.request("POST", "/v1/ingest", lines)
            counts["accepted"] += int(answer["accepted"])
        except OSError:
            counts["failed"] += 1
        time.sleep(0.01)


def _poll_all(watch: FinalityWatch, stop: threading.Event) -> None:
    while not stop.is_set():
        for agent in watch.agents:
            watch.poll(agent)
        time.sleep(0.02)


def _status_of(observer: Agent, node_id: str) -> str:
    try:
        return str(observer.request("GET", "/v1/status")["members"][node_id]["status"])
    except (OSError, KeyError):
        return "unknown"


def test_a_final_value_never_changes_across_kill_restart_and_pause(agents: list[Agent]) -> None:
    watch = FinalityWatch(agents)
    stop = threading.Event()
    counts = {"accepted": 0, "failed": 0}
    threads = [
        threading.Thread(target=_write_traffic, args=(agents, stop, counts), daemon=True),
        threading.Thread(target=_poll_all, args=(watch, stop), daemon=True),
    ]
    for thread in threads:
        thread.start()
    killed, paused, observer = agents[1], agents[2], agents[0]
    verdicts = []
    try:
        time.sleep(4.0)
        killed.kill()  # in the middle of traffic
        time.sleep(1.0)
        killed.start()
        watch.restarted(killed)
        killed.wait_ready(20.0)
        time.sleep(3.0)
        assert paused.process is not None
        os.kill(paused.process.pid, signal.SIGSTOP)
        end = time.monotonic() + PAUSE_S
        while time.monotonic() < end:
            verdicts.append(_status_of(observer, paused.node_id))
            time.sleep(0.2)
        os.kill(paused.process.pid, signal.SIGCONT)
        time.sleep(5.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    # Quiet: every window should now go final everywhere, and still never change.
    for _ in range(40):
        for agent in agents:
            watch.poll(agent)
        time.sleep(0.1)
    print(f"writes {counts}, final reports {watch.finals_seen}, verdicts {set(verdicts)}")
    assert "dead" in verdicts, f"the pause was not long enough to be declared dead: {verdicts}"
    assert counts["accepted"] > 100, counts
    assert watch.finals_seen > 50, "too few windows went final to mean anything"
    assert not watch.violations, watch.violations[:10]
