"""The ``harness`` fixture: every conformance test runs once per transport implementation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from transport_harness import Harness, MemoryHarness, ZmqHarness


@pytest.fixture(params=["memory", "zeromq"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """A fresh harness of each kind; every endpoint it opened is closed, even on failure."""
    chosen: Harness = MemoryHarness() if request.param == "memory" else ZmqHarness()
    try:
        yield chosen
    finally:
        chosen.close_all()
