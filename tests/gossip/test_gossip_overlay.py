"""The finger overlay that anti-entropy ships deltas over."""

from __future__ import annotations

import math
import random

import pytest

from crdtstream.gossip.overlay import finger_neighbours


def members(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"node-{rng.getrandbits(32):08x}" for _ in range(count)]


def graph(names: list[str]) -> dict[str, list[str]]:
    return {name: finger_neighbours(name, [p for p in names if p != name]) for name in names}


@pytest.mark.parametrize("count", [1, 2, 3, 5, 17, 64, 300])
def test_every_member_reaches_every_other_over_the_overlay(count: int) -> None:
    for seed in range(3):
        edges = graph(members(count, seed))
        reverse: dict[str, list[str]] = {name: [] for name in edges}
        for name, neighbours in edges.items():
            for neighbour in neighbours:
                reverse[neighbour].append(name)
        start = next(iter(edges))
        # Strongly connected: everyone reachable from one node, and that node from everyone.
        assert reachable(edges, start) == reachable(reverse, start) == count, f"seed={seed}"


def reachable(edges: dict[str, list[str]], start: str) -> int:
    seen, frontier = {start}, [start]
    while frontier:
        frontier = [n for node in frontier for n in edges[node] if n not in seen]
        seen.update(frontier)
    return len(seen)


@pytest.mark.parametrize("count", [10, 100, 1_000])
def test_a_node_has_about_two_log2_n_neighbours(count: int) -> None:
    names = members(count, 1)
    degrees = [
        len(finger_neighbours(name, [p for p in names if p != name])) for name in names[:100]
    ]
    assert min(degrees) >= 2
    assert max(degrees) <= 3 * math.ceil(math.log2(count))
    assert sum(degrees) / len(degrees) <= 2 * math.log2(count) + 2


def test_a_new_member_changes_few_neighbour_sets() -> None:
    """A changed neighbour costs a full-state transfer, so the overlay must be stable."""
    names = members(201, 4)
    before = graph(names[:200])
    after = graph(names)
    changed = [name for name in before if set(before[name]) != set(after[name]) - {names[200]}]
    assert len(changed) <= 2 * math.ceil(math.log2(200)) + 4  # a finger or two per level


def test_a_small_cluster_is_fully_connected() -> None:
    assert finger_neighbours("a", ["b", "c"]) == ["b", "c"]
    assert finger_neighbours("a", []) == []
