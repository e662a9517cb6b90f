"""Window finality: every reporter closed the window, every replica that may hold writes to it
is closed by itself or retired and sealed by every reporter, and all of it is merged here."""

from __future__ import annotations

import random

from crdtstream.config import GossipConfig, MembershipConfig, WindowConfig
from crdtstream.gossip.core import GossipCore
from crdtstream.gossip.finality import ProgressTable, window_is_final
from crdtstream.gossip.messages import Outgoing, Progress
from crdtstream.gossip.reference import SlotCounters, SlotDelta, decode_slot_delta

LATENESS_MS = 500


def final(
    progress: dict[str, Progress],
    merged: dict[str, int],
    live: list[str],
    retired: frozenset[str] = frozenset(),
) -> bool:
    return window_is_final(0, 1_000, live, progress, merged, retired)


def test_not_final_while_a_live_members_watermark_has_not_reached_the_window_end() -> None:
    """Watermarks are already lateness-adjusted (newest time minus allowed lateness)."""
    progress = {"a": Progress("a", 2_000, {0: 3}), "b": Progress("b", 999, {0: 1})}
    assert not final(progress, {"a": 3, "b": 1}, ["a", "b"])
    progress["b"] = Progress("b", 1_000, {0: 1})
    assert final(progress, {"a": 3, "b": 1}, ["a", "b"])


def test_not_final_until_every_advertised_write_is_merged() -> None:
    progress = {"a": Progress("a", 9_000, {0: 3}), "b": Progress("b", 9_000, {0: 2})}
    assert not final(progress, {"a": 3, "b": 1}, ["a", "b"])
    assert final(progress, {"a": 3, "b": 2}, ["a", "b"])


def test_a_member_never_heard_from_holds_finality_back() -> None:
    assert not final({"a": Progress("a", 9_000, {})}, {}, ["a", "b"])


def test_a_writer_neither_closed_by_itself_nor_retired_holds_finality_back() -> None:
    # b is no reporter (say, its member row is gone) but wrote to the window: it may write more.
    progress = {"a": Progress("a", 9_000, {0: 1}), "b": Progress("b", 100, {0: 5})}
    assert not final(progress, {"a": 1, "b": 2}, ["a"])
    closed = {**progress, "b": Progress("b", 1_000, {0: 2})}
    assert final(closed, {"a": 1, "b": 2}, ["a"])  # b closed the window itself at 2 writes


def test_a_replica_only_another_reporter_holds_is_waited_for() -> None:
    # a has merged nothing of b~1, but c reports holding 3 of its writes: a must wait for them.
    progress = {
        "a": Progress("a", 9_000),
        "c": Progress("c", 9_000, {}, {0: {"b~1": 3}}),
    }
    assert not final(progress, {}, ["a", "c"])
    assert not final(progress, {"b~1": 3}, ["a", "c"])  # b~1 is neither closed nor retired


def test_a_retired_replica_needs_every_reporters_seal_and_the_largest_count_held() -> None:
    retired = frozenset({"b~1"})
    sealed = frozenset({"b~1"})
    progress = {
        "a": Progress("a", 9_000, {}, {0: {"b~1": 2}}, sealed),
        "c": Progress("c", 9_000, {}, {0: {"b~1": 4}}),  # c has not sealed b~1 yet
    }
    assert not final(progress, {"b~1": 4}, ["a", "c"], retired)
    progress["c"] = Progress("c", 9_000, {}, {0: {"b~1": 4}}, sealed)
    assert not final(progress, {"b~1": 2}, ["a", "c"], retired)  # c holds more than merged
    assert final(progress, {"b~1": 4}, ["a", "c"], retired)


def test_a_dead_members_replica_still_holds_finality_back() -> None:
    # The reporters are every member that has not left, dead ones included.
    progress = {"a": Progress("a", 9_000, {0: 1}), "b": Progress("b", 100, {0: 5})}
    assert not final(progress, {"a": 1, "b": 5}, ["a", "b"])


def test_progress_records_carry_holdings_and_seals_and_join_them() -> None:
    first = Progress("a", 10, {0: 1}, {0: {"b": 2}}, frozenset({"x"}))
    second = Progress("a", 20, {0: 1}, {0: {"b": 1, "c": 3}}, frozenset({"y"}))
    joined = first.join(second)
    assert joined == Progress("a", 20, {0: 1}, {0: {"b": 2, "c": 3}}, frozenset({"x", "y"}))
    assert Progress.from_wire(joined.to_wire()) == joined
    assert len(Progress("a", 1, {0: 1}).to_wire()) == 3  # nothing held: the old three fields


def test_progress_records_join_by_pointwise_max_and_keep_the_newest_windows() -> None:
    table = ProgressTable(keep_windows=2)
    assert table.merge(Progress("a", 100, {0: 1, 1_000: 4}))
    assert table.merge(Progress("a", 50, {0: 3, 2_000: 1}))
    assert table.records["a"] == Progress("a", 100, {1_000: 4, 2_000: 1})
    assert not table.merge(Progress("a", 10, {1_000: 2}))


def _core(name: str, seed: int) -> tuple[GossipCore[SlotDelta], SlotCounters]:
    lattice = SlotCounters(f"{name}~0", 1_000, LATENESS_MS)
    core = GossipCore(
        name,
        f"memory://{name}",
        lattice.replica,
        lattice,
        decode_slot_delta,
        rng=random.Random(seed),
        gossip=GossipConfig(interval_ms=50, fanout=2),
        membership=MembershipConfig(probe_interval_ms=1_000, probe_timeout_ms=200),
        window=WindowConfig(size_ms=1_000, allowed_lateness_ms=LATENESS_MS),
        seeds=["a"],
    )
    return core, lattice


def _run(
    cores: dict[str, tuple[GossipCore[SlotDelta], SlotCounters]],
    start: int,
    end: int,
    down: set[str],
) -> None:
    for now_ms in range(start, end, 10):
        queue: list[tuple[str, Outgoing]] = []
        for name, (core, lattice) in cores.items():
            if name not in down:
                lattice.advance(now_ms)
                queue.extend((name, item) for item in core.tick(now_ms))
        while queue:
            source, item = queue.pop(0)
            if item.peer_id in down or source in down:
                continue
            replies = cores[item.peer_id][0].step(source, item.payload, now_ms)
            queue.extend((item.peer_id, reply) for reply in replies)
    malformed = {name: core.stats.malformed_received for name, (core, _) in cores.items()}
    assert not any(malformed.values()), f"frames of correct peers counted malformed: {malformed}"


def test_a_crashed_member_holds_finality_back_until_it_is_removed() -> None:
    cores = {name: _core(name, seed) for seed, name in enumerate("abc")}
    _run(cores, 0, 300, set())
    for name, (_, lattice) in cores.items():
        lattice.add(f"hits.{name}", 200, 1)
    _run(cores, 300, 1_400, set())
    assert not any(core.is_final(0, 1_000) for core, _ in cores.values())  # lateness not over
    _run(cores, 1_400, 3_000, set())
    assert all(core.is_final(0, 1_000) for core, _ in cores.values())
    cores["c"][1].add("hits.c", 3_100, 1)  # a write to the next window that never leaves c
    _run(cores, 3_000, 20_000, {"c"})
    assert cores["a"][0].membership.members["c"].status == "dead"
    # c may only be paused: it still holds a write to [3000, 4000) that nobody else has.
    assert not cores["a"][0].is_final(3_000, 4_000)
    assert cores["a"][0].is_final(0, 1_000)  # c had closed the older window before it went down
    assert cores["a"][0].remove_member("c", 20_000)  # an operator: c is gone for good
    _run(cores, 20_000, 22_000, {"c"})
    assert all(cores[name][0].is_final(3_000, 4_000) for name in "ab")
    assert cores["b"][0].membership.members["c"].status == "removed"
