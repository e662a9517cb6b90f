"""What the conformance suite needs from each transport: open endpoints, move packets, clean up.

A harness hides the one real difference between the implementations: the simulated network
moves packets only when its manual clock is advanced, ZeroMQ moves them on its own I/O thread.
Waiting is always bounded (a step budget for memory, a deadline for ZeroMQ), so a broken
transport fails a test instead of hanging it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Protocol

from crdtstream.config import TransportConfig
from crdtstream.transport import Packet, Transport
from transports.memory import MemoryNetwork, MemoryTransport
from transports.zeromq import CurveKeys, ZmqTransport, generate_curve_keypair

WAIT_SECONDS_MAX = 10.0
"""Upper bound for any wait on real sockets; generous so a loaded CI machine does not flake."""


class Harness(Protocol):
    """One transport implementation as the conformance suite sees it."""

    name: str

    def open(self, node_id: str, config: TransportConfig | None = None) -> Transport: ...

    def address_of(self, endpoint: Transport) -> str: ...

    def reopen(self, endpoint: Transport) -> Transport: ...

    def dead_address(self) -> str: ...

    def flush(self) -> None: ...

    def wait_until(self, condition: Callable[[], bool]) -> bool: ...

    def close_all(self) -> None: ...


class MemoryHarness:
    """The simulated network without faults: lossless and ordered, moved by ``flush``."""

    name = "memory"

    def __init__(self, seed: int = 7) -> None:
        self.network = MemoryNetwork(seed)
        self.endpoints: list[MemoryTransport] = []

    def open(self, node_id: str, config: TransportConfig | None = None) -> Transport:
        endpoint = self.network.endpoint(node_id, config)
        self.endpoints.append(endpoint)
        return endpoint

    def address_of(self, endpoint: Transport) -> str:
        assert isinstance(endpoint, MemoryTransport)
        return endpoint.address

    def reopen(self, endpoint: Transport) -> Transport:
        assert isinstance(endpoint, MemoryTransport)
        endpoint.close()
        fresh = self.network.endpoint(endpoint.node_id, endpoint.config, endpoint.address)
        self.endpoints.append(fresh)
        return fresh

    def dead_address(self) -> str:
        return "memory://nobody-listens-here"

    def flush(self) -> None:
        self.network.run_until_idle(max_ms=10_000)

    def wait_until(self, condition: Callable[[], bool]) -> bool:
        for _ in range(100):
            if condition():
                return True
            self.network.advance(1)
        return condition()

    def close_all(self) -> None:
        for endpoint in self.endpoints:
            endpoint.close()


def free_tcp_address() -> str:
    """A loopback address where, a moment ago, nothing listened."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


CONFORMANCE_NODE_IDS = (
    "a",
    "b",
    "ghost",
    "hub",
    *(f"node-{index}" for index in range(5)),
    *(f"spoke-{index:02d}" for index in range(16)),
)
"""Every node id the conformance suite uses, so a CURVE harness can key them all up front."""


def curve_keys_for(node_ids: tuple[str, ...]) -> dict[str, CurveKeys]:
    """A fresh key pair per node, each allowing all of them."""
    pairs = {node_id: generate_curve_keypair() for node_id in node_ids}
    allowed = {node_id: public for node_id, (public, _) in pairs.items()}
    return {
        node_id: CurveKeys(public, secret, allowed) for node_id, (public, secret) in pairs.items()
    }


class ZmqHarness:
    """Real ZeroMQ endpoints on 127.0.0.1 with system-chosen ports, optionally with CURVE."""

    def __init__(self, curve_by_node: dict[str, CurveKeys] | None = None) -> None:
        self.endpoints: list[ZmqTransport] = []
        self.curve_by_node = curve_by_node or {}
        self.name = "zeromq-curve" if curve_by_node else "zeromq"

    def open(self, node_id: str, config: TransportConfig | None = None) -> Transport:
        return self._open(node_id, "tcp://127.0.0.1:0", config)

    def _open(self, node_id: str, address: str, config: TransportConfig | None) -> ZmqTransport:
        curve = self.curve_by_node.get(node_id)
        endpoint = ZmqTransport(node_id, address, config, curve=curve)
        self.endpoints.append(endpoint)
        return endpoint

    def address_of(self, endpoint: Transport) -> str:
        assert isinstance(endpoint, ZmqTransport)
        return endpoint.listen_address

    def reopen(self, endpoint: Transport) -> Transport:
        assert isinstance(endpoint, ZmqTransport)
        endpoint.close()
        return self._open(endpoint.node_id, endpoint.listen_address, endpoint.config)

    def dead_address(self) -> str:
        return free_tcp_address()

    def flush(self) -> None:
        """ZeroMQ moves packets by itself; nothing to do."""

    def wait_until(self, condition: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + WAIT_SECONDS_MAX
        while not condition():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close_all(self) -> None:
        for endpoint in self.endpoints:
            endpoint.close()


def collect(harness: Harness, endpoint: Transport, count: int) -> list[Packet]:
    """Receive until ``count`` packets arrived or the harness's wait budget ran out."""
    packets: list[Packet] = []

    def enough() -> bool:
        packets.extend(endpoint.receive(1_000))
        return len(packets) >= count

    harness.flush()
    harness.wait_until(enough)
    return packets


def drain(harness: Harness, endpoint: Transport, quiet_rounds: int = 20) -> list[Packet]:
    """Receive until nothing more arrives for ``quiet_rounds`` consecutive waits."""
    packets: list[Packet] = []
    quiet = 0

    def settled() -> bool:
        nonlocal quiet
        batch = endpoint.receive(10_000)
        packets.extend(batch)
        quiet = 0 if batch else quiet + 1
        return quiet >= quiet_rounds

    harness.flush()
    harness.wait_until(settled)
    return packets
