"""The fault proxy adds the latency it is given and a cut link passes nothing.

Latency is checked as a ratio against a direct connection to the same echo server, measured
side by side, never as an absolute speed: the proxied round trip must exceed the direct one by
far more than any scheduling noise, and at least by the two one-way delays it sleeps for.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from bench.cluster import LinkProxy, LinkShape, ProxyHost
from bench.processes import free_port

pytestmark = [pytest.mark.timeout(60)]

LATENCY_MS = 15.0
ROUND_TRIPS = 10


class EchoServer:
    """A blocking echo server in a thread, recording every byte it received."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.received = bytearray()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(connection,), daemon=True).start()

    def _echo(self, connection: socket.socket) -> None:
        with connection:
            while True:
                try:
                    data = connection.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                self.received += data
                connection.sendall(data)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def host() -> Iterator[ProxyHost]:
    proxies = ProxyHost()
    yield proxies
    proxies.close()


def _median_round_trip_s(port: int) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for number in range(ROUND_TRIPS):
            message = f"ping {number}\n".encode()
            started = time.perf_counter()
            connection.sendall(message)
            answer = b""
            while len(answer) < len(message):
                answer += connection.recv(4096)
            times.append(time.perf_counter() - started)
            assert answer == message
    return statistics.median(times)


def test_latency_is_added_in_each_direction(echo: EchoServer, host: ProxyHost) -> None:
    proxy = host.add(LinkProxy("a->b", free_port(), echo.port, LinkShape(LATENCY_MS, 1.0), 7))
    direct_s = _median_round_trip_s(echo.port)
    proxied_s = _median_round_trip_s(proxy.listen_port)
    # Both directions of the connection are delayed: at least two one-way latencies (less the
    # jitter), which on loopback is many times the direct round trip.
    assert proxied_s >= 2 * (LATENCY_MS - 1.0) / 1000, (proxied_s, direct_s)
    assert proxied_s / direct_s >= 10, (proxied_s, direct_s)
    assert proxy.bytes_forwarded > 0


def _echoed(connection: socket.socket, message: bytes) -> bytes:
    """What comes back for ``message`` within a second: b"" when the connection was closed,
    reset or answered nothing."""
    connection.settimeout(1.0)
    try:
        connection.sendall(message)
        return connection.recv(4096)
    except OSError:  # reset by the proxy, or timed out waiting
        return b""


def test_a_cut_link_passes_nothing_and_heals(echo: EchoServer, host: ProxyHost) -> None:
    proxy = host.add(LinkProxy("a->b", free_port(), echo.port, LinkShape(), 7))
    with socket.create_connection(("127.0.0.1", proxy.listen_port), timeout=5) as connection:
        assert _echoed(connection, b"before\n") == b"before\n"
        host.set_cut([proxy], True)
        # The open connection is dropped: nothing comes back, nothing reaches the server.
        assert _echoed(connection, b"during\n") == b""
    with socket.create_connection(("127.0.0.1", proxy.listen_port), timeout=5) as connection:
        assert _echoed(connection, b"new during\n") == b""
    time.sleep(0.1)
    assert b"during" not in bytes(echo.received)
    assert proxy.connections_refused >= 1
    host.set_cut([proxy], False)
    with socket.create_connection(("127.0.0.1", proxy.listen_port), timeout=5) as connection:
        assert _echoed(connection, b"after\n") == b"after\n"


def _echo_seconds(port: int, payload: bytes) -> float:
    """Seconds to send ``payload`` through ``port`` and read all of it back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        started = time.perf_counter()
        connection.sendall(payload)
        received = 0
        while received < len(payload):
            chunk = connection.recv(65_536)
            assert chunk, "the connection closed early"
            received += len(chunk)
        return time.perf_counter() - started


def test_bandwidth_is_throttled(echo: EchoServer, host: ProxyHost) -> None:
    bytes_per_s = 400_000.0
    payload = bytes(100_000)
    proxy = host.add(
        LinkProxy("a->b", free_port(), echo.port, LinkShape(bandwidth_bytes_per_s=bytes_per_s), 7)
    )
    direct_s = _echo_seconds(echo.port, payload)
    throttled_s = _echo_seconds(proxy.listen_port, payload)
    # Each direction carries the payload at the throttled rate: at least 0.25 s one way, which
    # on loopback is many times the direct echo of 100 kB.
    assert throttled_s >= len(payload) / bytes_per_s * 0.9, (throttled_s, direct_s)
    assert throttled_s / direct_s >= 5, (throttled_s, direct_s)
