"""Loopback addresses for the library's network tests."""

from __future__ import annotations

import socket


def free_tcp_address() -> str:
    """A loopback ZeroMQ address where, a moment ago, nothing listened."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"
