"""The strong history through real processes behind the fault proxies, with a partition and a
kill: concurrent clients at every node add, conditionally add and read one strong counter while
the leader is cut off (then healed) and a follower is killed with SIGKILL (then restarted); the
history must be linearizable (Wing & Gong / Porcupine checker) and every node must end with a
value between the acknowledged adds and those plus the unknown ones."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bench.cluster import PROFILES, Cluster
from tests.checkers.linearizability import assert_counter_history
from tests.node.test_multiprocess_strong import CLIENTS, SharedRecorder, _client, _leader, _read

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(180)]


def _wait_for_leader(cluster: Cluster, deadline_s: float = 20.0) -> str:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        leader = _leader(cluster.agents)
        if leader is not None:
            return leader.node_id
        time.sleep(0.05)
    raise AssertionError(f"no leader within {deadline_s} s")


def test_strong_history_is_linearizable_across_a_partition_and_a_kill(tmp_path: Path) -> None:
    with Cluster(
        tmp_path, shape=PROFILES["region"], policy=("quota.*=strong",), timeout_ms=1_000
    ) as cluster:
        _wait_for_leader(cluster)
        recorder = SharedRecorder()
        stop = threading.Event()
        threads = [
            threading.Thread(target=_client, args=(n, cluster.agents, recorder, stop), daemon=True)
            for n in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.5)
            cut_off = _wait_for_leader(cluster)
            cluster.isolate(cut_off)  # the leader alone: the rest must elect and go on
            time.sleep(2.0)
            cluster.heal()
            time.sleep(1.0)
            leader = _wait_for_leader(cluster)
            victim = next(agent for agent in cluster.agents if agent.node_id != leader)
            victim.kill()
            time.sleep(1.5)
            victim.start()
            victim.wait_ready(20.0)
            time.sleep(1.5)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        history = recorder.history()
        end = time.monotonic() + 15
        final_values = {agent.node_id: _read(agent) for agent in cluster.agents}
        while None in final_values.values() and time.monotonic() < end:
            time.sleep(0.2)
            final_values = {agent.node_id: _read(agent) for agent in cluster.agents}
    assert_counter_history(history, final_values)
