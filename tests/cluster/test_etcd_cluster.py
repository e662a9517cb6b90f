"""The etcd anchor's cluster: its peer links really cross the fault proxies.

A member cut off alone must refuse writes and linearizable reads while the other two go on, and
catch up after the heal; the routers must know every member by the id etcd itself gives it
(otherwise the Raft traffic would go around the proxies and no partition would hold). Needs
``etcd`` (Debian ``etcd-server``, installed by ``scripts/system-deps``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from bench.etcd_cluster import EtcdClient, EtcdCluster, member_id

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(120)]

TIMEOUT_S = 1.0


def _etcd() -> str:
    etcd = shutil.which("etcd")
    if etcd is None:
        pytest.fail("the etcd binary is missing: apt-get install etcd-server (scripts/check does)")
    return etcd


async def _until(condition: object, seconds: float) -> bool:
    """Whether the coroutine function ``condition`` returned true within ``seconds``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        if await condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False


async def _scenario(cluster: EtcdCluster) -> None:
    client = EtcdClient(cluster.client_urls(), TIMEOUT_S)
    try:
        assert await client.add("n1", "k")
        cluster.partition(["n1"])

        async def majority_writes() -> bool:
            return await client.add("n2", "k")

        # The majority elects a leader among itself if n1 led, then writes again.
        assert await _until(majority_writes, 15.0)
        assert await client.add("n3", "k")
        for _ in range(3):
            assert not await client.add("n1", "k")
            assert await client.read("n1", "k") is None  # linearizable: refused
        assert await client.read("n1", "k", "eventual") == 1.0  # its own, older state
        answer = await client.write("n2", "q", {"op": "conditional_add", "value": 1, "limit": 1})
        assert answer == {"applied": True, "value": 1}
        answer = await client.write("n3", "q", {"op": "conditional_add", "value": 1, "limit": 1})
        assert answer == {"applied": False, "value": 1}
        cluster.heal()

        async def caught_up() -> bool:
            return await client.read("n1", "k", "eventual") == 3.0

        assert await _until(caught_up, 15.0)
        assert await client.read("n1", "k") == 3.0
    finally:
        await client.close()


def test_a_member_cut_off_alone_refuses_and_catches_up_after_the_heal(tmp_path: Path) -> None:
    with EtcdCluster(tmp_path, _etcd(), size=3) as cluster:
        url = cluster.client_urls()["n1"] + "/v3/cluster/member/list"
        request = urllib.request.Request(url, data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            members = json.loads(response.read())["members"]
        advertised = {m["name"]: format(int(m["ID"]), "x") for m in members}
        assert advertised == {m["name"]: member_id(m["peerURLs"][0]) for m in members}, (
            "the routers would not recognise the members"
        )
        asyncio.run(_scenario(cluster))
        assert cluster.bytes_forwarded() > 0
