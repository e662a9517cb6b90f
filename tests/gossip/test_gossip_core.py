"""The gossip core as the driver sees it: bytes in, bytes out, bounded, and robust to junk."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtstream import wire
from crdtstream.config import GossipConfig, MembershipConfig
from crdtstream.errors import DecodeError
from crdtstream.gossip.catalog import Catalog
from crdtstream.gossip.core import GossipCore
from crdtstream.gossip.messages import (
    MemberUpdate,
    Ping,
    Progress,
    decode_frame,
    encode_frame,
)
from crdtstream.gossip.reference import SlotCounters, SlotDelta, decode_slot_delta

SMALL_FRAMES = GossipConfig(interval_ms=50, fanout=3, chunk_bytes_max=2048)


def make_core(name: str, seed: int, *, catalog: bool = False) -> GossipCore[SlotDelta]:
    lattice = SlotCounters(f"{name}~0", 1_000, 0)
    return GossipCore(
        name,
        f"memory://{name}",
        lattice.replica,
        lattice,
        decode_slot_delta,
        rng=random.Random(seed),
        gossip=SMALL_FRAMES,
        membership=MembershipConfig(probe_interval_ms=100, probe_timeout_ms=50),
        seeds=["a"],
        catalog=Catalog(f"{name}~0", random.Random(seed), interval_ms=100) if catalog else None,
    )


def counters(core: GossipCore[SlotDelta]) -> SlotCounters:
    """The reference lattice that :func:`make_core` gave ``core``."""
    assert isinstance(core.lattice, SlotCounters)
    return core.lattice


def run(cores: dict[str, GossipCore[SlotDelta]], start_ms: int, end_ms: int) -> list[bytes]:
    """Tick and deliver everything at once; return every payload that was sent."""
    sent: list[bytes] = []
    for now_ms in range(start_ms, end_ms, 10):
        queue = [(name, item) for name, core in cores.items() for item in core.tick(now_ms)]
        while queue:
            source, item = queue.pop(0)
            sent.append(item.payload)
            replies = cores[item.peer_id].step(source, item.payload, now_ms)
            queue.extend((item.peer_id, reply) for reply in replies)
    malformed = {name: core.stats.malformed_received for name, core in cores.items()}
    assert not any(malformed.values()), f"frames of correct peers counted malformed: {malformed}"
    return sent


def test_a_frame_round_trips_with_its_piggyback() -> None:
    update = MemberUpdate("n1", "memory://n1", 3, "suspect", "n1~0", "n2")
    progress = Progress("n1~0", 1_234, {0: 5, 1_000: 2})
    frame = decode_frame(encode_frame(wire.Tag.SWIM_PING, [7, "n1"], [update], [progress]))
    assert (frame.tag, frame.body, frame.updates, frame.progress) == (
        wire.Tag.SWIM_PING,
        Ping(7, "n1"),
        [update],
        [progress],
    )


def test_a_frame_of_another_subsystem_is_refused() -> None:
    with pytest.raises(DecodeError, match="not a gossip message"):
        decode_frame(wire.encode(wire.Tag.RAFT_MESSAGE, [[], [], []]))


def test_no_frame_exceeds_the_size_cap_whatever_the_state_size() -> None:
    cores = {name: make_core(name, seed) for seed, name in enumerate("abc")}
    for index in range(3_000):
        counters(cores["a"]).add(f"some.long.metric.name.with.tags#host:{index}", 10, index + 1)
    sent = run(cores, 0, 2_000)
    assert max(len(payload) for payload in sent) <= SMALL_FRAMES.chunk_bytes_max
    expected = cores["a"].lattice.full_state()
    assert all(core.lattice.full_state() == expected for core in cores.values())


def test_the_catalog_rides_the_same_frames_and_converges() -> None:
    cores = {name: make_core(name, seed, catalog=True) for seed, name in enumerate("abc")}
    catalogs = {name: core.catalog for name, core in cores.items()}
    assert all(isinstance(catalog, Catalog) for catalog in catalogs.values())
    cores["a"].catalog.declare("x", "max")  # type: ignore[union-attr]
    cores["c"].catalog.declare("x", "min")  # type: ignore[union-attr]
    run(cores, 0, 2_000)
    for core in cores.values():
        assert core.catalog.conflicts() == {"x": ["max", "min"]}  # type: ignore[union-attr]


@given(st.binary(max_size=300))
def test_junk_bytes_are_counted_and_change_nothing(junk: bytes) -> None:
    core = make_core("a", 1)
    counters(core).add("k", 10, 1)
    before = core.lattice.full_state()
    assert core.step("b", junk, 0) == []
    assert core.stats.malformed_received == 1
    assert core.lattice.full_state() == before


@given(
    st.sampled_from(
        [wire.Tag.GOSSIP_DELTA, wire.Tag.GOSSIP_ACK, wire.Tag.SWIM_PING, wire.Tag.SWIM_SYNC]
    ),
    st.lists(
        st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=5), st.binary(max_size=8)),
        max_size=6,
    ),
)
def test_well_framed_bodies_of_the_wrong_shape_are_counted(tag: int, body: list[object]) -> None:
    core = make_core("a", 1)
    before = core.lattice.full_state()
    core.step("b", wire.encode(tag, [[], [], body]), 0)
    assert core.lattice.full_state() == before
    assert core.stats.frames_received == 1


def test_frames_from_a_peer_with_other_policy_rules_are_refused() -> None:
    cores = {name: make_core(name, seed) for seed, name in enumerate("ab")}
    lattice = SlotCounters("c~0", 1_000, 0)
    cores["c"] = GossipCore(
        "c",
        "memory://c",
        "c~0",
        lattice,
        decode_slot_delta,
        rng=random.Random(9),
        gossip=SMALL_FRAMES,
        membership=MembershipConfig(probe_interval_ms=100, probe_timeout_ms=50),
        seeds=["a"],
        rules_fingerprint="quota.*=strong",
    )
    lattice.add("from-c", 10, 5)
    run(cores, 0, 1_000)
    assert cores["a"].stats.refused_rules_mismatch > 0
    assert sorted(cores["a"].membership.members) == ["a", "b"]
    assert counters(cores["a"]).slot("from-c", 0, "c~0") == 0


def test_no_window_is_final_before_the_node_has_joined() -> None:
    core = make_core("b", 2)  # its seed "a" never answers
    counters(core).add("k", 10, 1)
    counters(core).advance(60_000)
    core.tick(60_000)
    assert not core.is_final(0, 1_000)
    alone = make_core("a", 1)  # "a" is its own seed: a cluster of one
    counters(alone).add("k", 10, 1)
    counters(alone).advance(60_000)
    alone.tick(60_000)
    assert alone.is_final(0, 1_000)
