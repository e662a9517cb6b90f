"""δ-interval anti-entropy, one rule per test.

References: Almeida, Shoker, Baquero, "Delta State Replicated Data Types" (JPDC 2018), §6
Algorithm 2; Enes et al., "Efficient Synchronization of State-based CRDTs" (ICDE 2019), §4.
"""

from __future__ import annotations

import random

from crdtstream import wire
from crdtstream.config import GossipConfig
from crdtstream.gossip.antientropy import AntiEntropy
from crdtstream.gossip.messages import Message
from crdtstream.gossip.reference import SlotCounters, SlotDelta, decode_slot_delta

CONFIG = GossipConfig(interval_ms=100, fanout=1, delta_buffer_groups=8, chunk_bytes_max=4096)


class Replica:
    """A lattice and its anti-entropy, wired by direct calls (no network)."""

    def __init__(self, name: str, seed: int, config: GossipConfig = CONFIG) -> None:
        self.name = name
        self.lattice = SlotCounters(f"{name}~0", window_size_ms=1_000, allowed_lateness_ms=0)
        self.sync = AntiEntropy(
            self.lattice, decode_slot_delta, config, random.Random(seed), delta_bytes_max=2048
        )


def deliver(messages: list[Message], source: Replica, replicas: dict[str, Replica]) -> int:
    """Deliver ``messages`` and every reply until quiet; return how many DELTA parts moved."""
    queue = [(source.name, message) for message in messages]
    parts = 0
    while queue:
        sender, message = queue.pop(0)
        parts += message.tag == wire.Tag.GOSSIP_DELTA
        receiver = replicas[message.peer_id]
        replies = receiver.sync.step(sender, message.tag, message.body)
        queue.extend((receiver.name, reply) for reply in replies)
    return parts


def shipped(messages: list[Message]) -> SlotDelta:
    """The join of every delta part in ``messages``."""
    total = SlotDelta()
    for message in messages:
        if message.tag == wire.Tag.GOSSIP_DELTA:
            total = total.join(decode_slot_delta(message.body[4]))
    return total


def test_a_new_peer_gets_the_full_state_then_only_the_interval_it_lacks() -> None:
    """Reference: Algorithm 2, "if D empty or min(keys(D)) > A[j] then send X"."""
    a, b = Replica("a", 1), Replica("b", 2)
    replicas = {"a": a, "b": b}
    for index in range(5):
        a.lattice.add(f"k{index}", 10, 1)
    first = a.sync.tick(0, ["b"])
    assert shipped(first).cells == a.lattice.full_state().cells
    deliver(first, a, replicas)
    assert a.sync.acknowledged("b") == a.sync.sequence
    a.lattice.add("k9", 10, 4)
    second = a.sync.tick(100, ["b"])
    assert set(shipped(second).cells) == {("k9", 0, "a~0")}
    assert a.sync.stats.full_states_sent == 1
    assert a.sync.stats.intervals_sent == 1


def test_nothing_is_sent_to_a_peer_that_acknowledged_everything() -> None:
    a, b = Replica("a", 1), Replica("b", 2)
    a.lattice.add("k", 10, 1)
    deliver(a.sync.tick(0, ["b"]), a, {"a": a, "b": b})
    assert a.sync.tick(100, ["b"]) == []


def test_a_delta_is_never_sent_back_to_the_node_it_came_from() -> None:
    """Reference: Enes et al. §4.1, avoiding back-propagation of δ-groups."""
    a, b, c = Replica("a", 1), Replica("b", 2), Replica("c", 3)
    replicas = {"a": a, "b": b, "c": c}
    for replica in (a, b):  # b learns that a has nothing yet (acks)
        deliver(replica.sync.tick(0, ["a" if replica is b else "b"]), replica, replicas)
    b.lattice.add("from-b", 10, 7)
    deliver(b.sync.tick(100, ["a"]), b, replicas)
    assert a.lattice.slot("from-b", 0, "b~0") == 7
    back_to_b = a.sync.tick(200, ["b"])
    assert shipped(back_to_b).is_empty()
    assert a.sync.acknowledged("b") == a.sync.sequence


def test_a_received_delta_that_teaches_nothing_is_not_buffered() -> None:
    """Reference: Enes et al. §4.2, removing redundant state from received δ-groups."""
    a, b = Replica("a", 1), Replica("b", 2)
    replicas = {"a": a, "b": b}
    a.lattice.add("k", 10, 3)
    messages = a.sync.tick(0, ["b"])
    deliver(messages, a, replicas)
    buffered = b.sync.buffered_groups
    deliver(messages, a, replicas)  # the same delta again: a duplicate
    assert b.sync.buffered_groups == buffered
    assert b.sync.stats.deltas_received == 2
    assert b.sync.stats.deltas_inflating == 1


def test_only_the_inflating_part_of_a_received_delta_is_forwarded() -> None:
    """Reference: Enes et al. §4.2, Δ(d, X) = the part of d that strictly inflates X."""
    b, c = Replica("b", 2), Replica("c", 3)
    b.lattice.merge(SlotDelta({("old", 0, "x~0"): 5}))
    b.sync.tick(0, [])  # b's own buffer now holds its earlier state
    before = b.sync.buffered_groups
    incoming = SlotDelta({("old", 0, "x~0"): 5, ("new", 0, "x~0"): 1})
    message = Message("b", wire.Tag.GOSSIP_DELTA, [42, 0, 0, 1, incoming.to_bytes()])
    deliver([message], c, {"b": b, "c": c})
    assert b.sync.buffered_groups == before + 1
    stored, origin = b.sync._buffer[b.sync.sequence - 1]
    assert stored.cells == {("new", 0, "x~0"): 1}
    assert origin == "c"


def test_the_buffer_is_collected_below_the_smallest_acknowledgement() -> None:
    """Reference: Algorithm 2, "l = min{n | (_, n) in A}; D = {(k, d) in D | k >= l}"."""
    a, b, c = Replica("a", 1), Replica("b", 2), Replica("c", 3)
    replicas = {"a": a, "b": b, "c": c}
    for round_index in range(3):
        a.lattice.add(f"k{round_index}", 10, 1)
        deliver(a.sync.tick(round_index * 100, ["b"]), a, replicas)
    a.sync.tick(300, ["b"])  # collection runs at the start of a round
    assert a.sync.buffered_groups == 0  # b is the only peer and acked everything
    a.lattice.add("k-late", 10, 1)
    a.sync.tick(400, ["b", "c"])  # c has acknowledged nothing yet: the group stays
    assert a.sync.buffered_groups >= 1


def test_a_peer_behind_a_truncated_buffer_gets_the_full_state() -> None:
    """Reference: Algorithm 2, the buffer does not cover the gap -> full state."""
    a, b = Replica("a", 1), Replica("b", 2)
    replicas = {"a": a, "b": b}
    a.lattice.add("first", 10, 1)
    deliver(a.sync.tick(0, ["b"]), a, replicas)
    for index in range(CONFIG.delta_buffer_groups + 3):
        a.lattice.add(f"k{index}", 10, 1)
        a.sync.tick(100 + index * 100, ["b"])  # lost on the way: groups pile up
    assert a.sync.stats.groups_truncated > 0
    now = 100 + (CONFIG.delta_buffer_groups + 3) * 100
    full_states = a.sync.stats.full_states_sent
    deliver(a.sync.tick(now, ["b"]), a, replicas)
    assert a.sync.stats.full_states_sent == full_states + 1
    assert b.lattice.full_state() == a.lattice.full_state()


def test_a_restarted_peer_gets_the_full_state_again() -> None:
    """Reference: Algorithm 2, "on crash: D and A are lost" — a new epoch resets its ack."""
    a, b = Replica("a", 1), Replica("b", 2)
    replicas = {"a": a, "b": b}
    a.lattice.add("k", 10, 1)
    deliver(a.sync.tick(0, ["b"]), a, replicas)
    replicas["b"] = Replica("b", 99)  # b lost its disk and came back
    b_again = replicas["b"]
    b_again.lattice.add("other", 10, 1)
    deliver(b_again.sync.tick(0, ["a"]), b_again, replicas)
    assert a.sync.stats.peer_restarts_seen == 1
    deliver(a.sync.tick(100, ["b"]), a, replicas)
    assert b_again.lattice.slot("k", 0, "a~0") == 1


def test_a_large_state_is_split_into_parts_that_each_fit_and_merge_alone() -> None:
    a, b = Replica("a", 1), Replica("b", 2)
    for index in range(400):
        a.lattice.add(f"some.rather.long.metric.name.{index}", 10, index + 1)
    messages = a.sync.tick(0, ["b"])
    assert len(messages) > 1
    assert all(len(m.body[4]) <= 2048 for m in messages)
    for message in messages[1::2]:  # every other part, alone, still merges
        b.lattice.merge(decode_slot_delta(message.body[4]))
    assert 0 < len(b.lattice.full_state().cells) < len(a.lattice.full_state().cells)


def test_a_large_transfer_is_acknowledged_only_when_every_part_arrived() -> None:
    a, b = Replica("a", 1), Replica("b", 2)
    replicas = {"a": a, "b": b}
    for index in range(400):
        a.lattice.add(f"some.rather.long.metric.name.{index}", 10, index + 1)
    messages = a.sync.tick(0, ["b"])
    lost = messages[-1]
    deliver(messages[:-1], a, replicas)
    assert a.sync.acknowledged("b") is None
    resent = a.sync.tick(100, ["b"])
    assert [m.body[2] for m in resent] == [lost.body[2]]  # only the missing part again
    deliver(resent, a, replicas)
    assert a.sync.acknowledged("b") == a.sync.sequence
    assert b.lattice.full_state() == a.lattice.full_state()


def test_parts_after_a_gap_wait_unacknowledged_until_the_gap_is_filled() -> None:
    """Trailing parts carry the per-window write counts that certify the earlier parts' data:
    merged first, a window could look complete (and final) before its data arrived."""
    a, b = Replica("a", 1), Replica("b", 2)
    replicas = {"a": a, "b": b}
    for index in range(400):
        a.lattice.add(f"some.rather.long.metric.name.{index}", 10, index + 1)
    messages = a.sync.tick(0, ["b"])
    last = decode_slot_delta(messages[-1].body[4])
    assert last.writes  # the write counts travel last
    assert deliver(list(reversed(messages[1:])), a, replicas) == len(messages) - 1
    assert b.lattice.full_state().is_empty()
    assert b.lattice.window_versions(0) == {}
    deliver(messages[:1], a, replicas)
    assert b.lattice.full_state() == a.lattice.full_state()
    assert a.sync.acknowledged("b") == a.sync.sequence


def test_peers_are_drawn_from_the_injected_random_generator() -> None:
    def targets(seed: int) -> list[str]:
        replica = Replica("a", seed, GossipConfig(interval_ms=100, fanout=2))
        replica.lattice.add("k", 10, 1)
        return [m.peer_id for m in replica.sync.tick(0, ["b", "c", "d", "e", "f"])]

    assert targets(5) == targets(5)
    assert len({tuple(targets(seed)) for seed in range(20)}) > 1


def test_deltas_go_only_to_overlay_neighbours_that_lack_something() -> None:
    peers = [f"p{index}" for index in range(40)]
    lattice = SlotCounters("me~0", window_size_ms=1_000, allowed_lateness_ms=0)
    sync = AntiEntropy(
        lattice,
        decode_slot_delta,
        GossipConfig(interval_ms=100, fanout=3),
        random.Random(3),
        delta_bytes_max=2048,
        node_id="me",
    )
    neighbours = sync.neighbours(peers)
    assert 2 <= len(neighbours) < len(peers)
    lattice.add("k", 10, 1)
    targets: set[str] = set()
    for round_index in range(len(neighbours)):
        sent = sync.tick(round_index * 100, peers)
        targets.update(m.peer_id for m in sent)
        for message in sent:  # every neighbour acknowledges what it got
            ack = [sync.epoch, 7, message.body[1], [message.body[2]]]
            sync.step(message.peer_id, wire.Tag.GOSSIP_ACK, ack)
    assert targets == set(neighbours)
    assert sync.tick(10_000, peers) == []


def test_an_interval_built_for_a_peers_previous_process_is_refused_and_the_full_state_follows() -> (
    None
):
    """A restarted peer that has not spoken yet must not merge an interval computed from what
    its previous process acknowledged: it would get write counts without the cells they count
    (a window would look final there too early)."""
    a, b = Replica("a", 1), Replica("b", 2)
    replicas = {"a": a, "b": b}
    a.lattice.add("early", 10, 1)
    deliver(a.sync.tick(0, ["b"]), a, replicas)  # b acknowledged "early"
    replicas["b"] = b_again = Replica("b", 99)  # b lost its disk and came back, silent so far
    a.lattice.add("late", 10, 1)
    interval = a.sync.tick(100, ["b"])
    assert shipped(interval).cells.keys() == {("late", 0, "a~0")}  # built on the old ack
    deliver(interval, a, replicas)
    assert b_again.lattice.window_versions(0) == {}  # refused: no counts without their cells
    assert b_again.sync.stats.intervals_for_other_epoch == 1
    assert a.sync.stats.peer_restarts_seen == 1  # told by the empty acknowledgement
    deliver(a.sync.tick(200, ["b"]), a, replicas)
    assert b_again.lattice.slot("early", 0, "a~0") == 1
    assert b_again.lattice.window_versions(0) == {"a~0": 2}
