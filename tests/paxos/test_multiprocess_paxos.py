"""Three agents as processes over ZeroMQ with ``quota.*`` on the Paxos backend: concurrent
clients through every node, the key's preferred proposer killed with SIGKILL mid-load and
restarted from its data directory; the history is linearizable, no acknowledged write is lost,
the quota holds, and the other nodes fell back to proposing themselves meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.processes import Agent, make_voters, running
from crdtstream.paxos.node import proposer_ranking
from tests.checkers.linearizability import assert_counter_history
from tests.node.malformed import assert_no_malformed
from tests.node.test_multiprocess_strong import KEY, SharedRecorder, _client, _read

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(180)]

CLIENTS = 4
LOAD_SECONDS = 8.0


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[Agent]]:
    started = make_voters(tmp_path, ["p1", "p2", "p3"], "quota.*=strong/paxos")
    with running(started) as ready:
        yield ready


def test_history_stays_linearizable_across_a_node_kill(agents: list[Agent]) -> None:
    recorder = SharedRecorder()
    stop = threading.Event()
    threads = [
        threading.Thread(target=_client, args=(n, agents, recorder, stop), daemon=True)
        for n in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(LOAD_SECONDS / 2)
        leader = proposer_ranking(KEY, [agent.node_id for agent in agents])[0]
        victim = next(agent for agent in agents if agent.node_id == leader)
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
    final_values = {agent.node_id: _read(agent) for agent in agents}
    assert_counter_history(history, final_values)
    statuses = {agent.node_id: agent.request("GET", "/v1/status") for agent in agents}
    survivors = [status["paxos"] for name, status in statuses.items() if name != leader]
    assert all(paxos["operations_forwarded"] > 0 for paxos in survivors)
    assert sum(paxos["forward_fallbacks"] for paxos in survivors) > 0
    assert sum(paxos["rounds_succeeded"] for paxos in survivors) > 0
    assert_no_malformed(statuses, "three Paxos acceptors, one killed and restarted:")
