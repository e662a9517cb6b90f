"""A member that advertises an address this node cannot use is counted and skipped."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest

from crdtstream.clock import SystemClock
from crdtstream.config import MembershipConfig
from crdtstream.node import Node, NodeConfig, PeerAddress
from transports.zeromq import ZmqTransport

pytestmark = [pytest.mark.timeout(60)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _scenario() -> tuple[Node, Node]:
    port_a, port_b = _free_port(), _free_port()
    address_a = f"tcp://127.0.0.1:{port_a}"
    a = Node(
        NodeConfig("a", address_a, membership=MembershipConfig.local(), tick_interval_ms=10),
        ZmqTransport("a", address_a),
        SystemClock(),
        random.Random(1),
    )
    # b binds to loopback but advertises an address no peer can connect to.
    b = Node(
        NodeConfig(
            "b",
            f"tcp://*:{port_b}",
            peers=(PeerAddress("a", address_a),),
            membership=MembershipConfig.local(),
            tick_interval_ms=10,
        ),
        ZmqTransport("b", f"tcp://127.0.0.1:{port_b}"),
        SystemClock(),
        random.Random(2),
    )
    stop = asyncio.Event()
    tasks = [asyncio.create_task(node.run(stop)) for node in (a, b)]
    await asyncio.sleep(2.0)
    stop.set()
    for task in tasks:
        await task  # re-raises if a node loop died
    return a, b


def test_an_unusable_member_address_is_counted_not_fatal() -> None:
    a, _ = asyncio.run(_scenario())
    assert "b" in a.engine.gossip.membership.members
    assert a.counters.peers_unusable >= 1
