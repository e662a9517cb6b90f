"""Removing a member that is gone for good: windows it had not closed wait for it (a final value
never changes), and an operator's removal, over HTTP or the command line, lets them go final."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from crdtstream.agent.http import build_app
from crdtstream.cli import main
from tests.node.engine_calls import windows, write
from tests.node.test_node_simulation import Cluster

SEED = 11


def _status_of(cluster: Cluster, observer: str, member: str) -> str:
    return cluster.nodes[observer].engine.gossip.membership.members[member].status


def _all_final(cluster: Cluster, key: str) -> bool:
    return all(window.final for node in cluster.nodes.values() for window in windows(node, key))


async def _scenario() -> None:
    cluster = Cluster(SEED, ["a", "b", "c"], None)
    cluster.run(2_000)  # the cluster forms
    for name in ("a", "b", "c"):
        write(cluster.nodes[name], "jobs.done", "add", 1)
    cluster.run(500)
    cluster.nodes.pop("c").transport.close()  # c dies and never comes back
    client = TestClient(TestServer(build_app(cluster.nodes["a"])))
    await client.start_server()
    try:
        refused = await client.post("/v1/members/c/remove")  # a still takes c for alive
        assert refused.status == 409, await refused.text()
        assert (await client.post("/v1/members/nobody/remove")).status == 409
        assert (await client.post("/v1/members/a/remove")).status == 409
        for _ in range(100):
            cluster.run(200)
            if _status_of(cluster, "a", "c") == "dead":
                break
        assert _status_of(cluster, "a", "c") == "dead", f"seed={SEED}"
        cluster.run(5_000)
        # Dead is a guess (c might only be paused): its open windows wait for it.
        assert not _all_final(cluster, "jobs.done"), f"seed={SEED}"
        url = str(client.make_url("/"))
        code = await asyncio.to_thread(main, ["remove-member", "c", "--node", url])
        assert code == 0
        again = await client.post("/v1/members/c/remove")
        assert (again.status, (await again.json())["removed"]) == (200, False)
    finally:
        await client.close()
    cluster.run(3_000)
    assert _status_of(cluster, "b", "c") == "removed", f"seed={SEED}: the removal did not spread"
    assert _all_final(cluster, "jobs.done"), f"seed={SEED}"
    totals = {
        name: sum(float(w.value) for w in windows(node, "jobs.done"))  # type: ignore[arg-type,misc]
        for name, node in cluster.nodes.items()
    }
    assert totals == {"a": 3.0, "b": 3.0}, f"seed={SEED}: {totals}"


def test_a_dead_member_holds_windows_back_until_an_operator_removes_it() -> None:
    asyncio.run(_scenario())
