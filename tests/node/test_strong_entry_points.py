"""A write to a ``strong`` key through the library's Node goes through Raft, or is refused with a
clear reason: never applied to the eventual store.

(HTTP and statsd have theirs in ``test_http_api.py``, and ``crdtstream bench modes`` writes
through HTTP; the engine's in ``tests/engine``.)"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest

from crdtstream.clock import SystemClock
from crdtstream.config import PolicyRule, RaftConfig
from crdtstream.engine.strong import StrongReplica
from crdtstream.errors import RefusedError
from crdtstream.node import Node, NodeConfig, PeerAddress
from transports.memory import MemoryNetwork, memory_address

pytestmark = [pytest.mark.timeout(60)]

Write = Callable[[Node, str], Awaitable[object]]


async def _node_write(node: Node, key: str) -> object:
    return await node.write(key, "add", 1)


def _run(voters: bool, scenario: Callable[[Node], Awaitable[None]]) -> None:
    async def main() -> None:
        address = memory_address("solo")
        config = NodeConfig(
            node_id="solo",
            listen_address=address,
            raft=RaftConfig(tick_ms=10),
            raft_voters=(PeerAddress("solo", address),) if voters else (),
            policy=(PolicyRule("st.*", "strong"),),
        )
        node = Node(config, MemoryNetwork(1).endpoint("solo"), SystemClock(), random.Random(1))
        stop = asyncio.Event()
        driver = asyncio.create_task(node.run(stop))
        try:
            await scenario(node)
        finally:
            stop.set()
            await driver

    asyncio.run(main())


@pytest.mark.parametrize("write", [_node_write], ids=["node"])
def test_a_strong_write_goes_through_raft(write: Write) -> None:
    async def scenario(node: Node) -> None:
        await write(node, "st.calls")
        await write(node, "st.calls")
        assert node.engine.store.kind_of("st.calls") is None
        strong = node.engine.strong
        assert isinstance(strong, StrongReplica)
        view = strong.machine.read("st.calls")
        assert view is not None
        assert sum(window[2] for window in view.windows) == 2

    _run(True, scenario)


@pytest.mark.parametrize("write", [_node_write], ids=["node"])
def test_a_strong_write_without_raft_is_refused(write: Write) -> None:
    async def scenario(node: Node) -> None:
        with pytest.raises(RefusedError, match="raft_voters"):
            await write(node, "st.calls")
        assert node.engine.store.kind_of("st.calls") is None
        assert node.engine.catalog.kind_of("st.calls") is None

    _run(False, scenario)
