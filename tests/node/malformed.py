"""How many malformed frames a node counted, read from its status (in process or over HTTP).

Simulations and multi-process tests that inject no byte corruption assert that this is zero:
a handler that raises on good frames, or a decoder that refuses them, shows up there (and is not
hidden as "malformed input").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def malformed_counts(status: Mapping[str, Any]) -> dict[str, int]:
    """The malformed-frame counters of a node's ``status()``, by the part that counted them."""
    raft = status.get("raft") or {}
    return {
        "node": int(status["node"]["packets_malformed"]),
        "gossip": int(status["gossip"]["malformed_received"]),
        "quorum": int(status["quorum"]["malformed"]),
        "raft": int(raft.get("malformed", 0)),
        "paxos": int((status.get("paxos") or {}).get("malformed", 0)),
    }


def assert_no_malformed(statuses: Mapping[str, Mapping[str, Any]], context: str = "") -> None:
    """Fail naming every node that counted a malformed frame."""
    counted = {name: malformed_counts(status) for name, status in statuses.items()}
    bad = {name: counts for name, counts in counted.items() if any(counts.values())}
    assert not bad, f"{context} malformed frames counted in a clean run: {bad}"
