"""The ``harness`` fixture: every conformance test runs once per transport implementation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from transport_harness import (
    CONFORMANCE_NODE_IDS,
    Harness,
    MemoryHarness,
    ZmqHarness,
    curve_keys_for,
)


def _make(kind: str) -> Harness:
    if kind == "memory":
        return MemoryHarness()
    if kind == "zeromq":
        return ZmqHarness()
    return ZmqHarness(curve_keys_for(CONFORMANCE_NODE_IDS))


@pytest.fixture(params=["memory", "zeromq", "zeromq-curve"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """A fresh harness of each kind; every endpoint it opened is closed, even on failure."""
    chosen = _make(request.param)
    try:
        yield chosen
    finally:
        chosen.close_all()
