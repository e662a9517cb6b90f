"""SWIM membership with Lifeguard, one rule per test.

References: Das, Gupta, Motivala, "SWIM" (DSN 2002); Dadgar, Phillips, Currey, "Lifeguard"
(arXiv 1707.00788).
"""

from __future__ import annotations

import random

from crdtstream import wire
from crdtstream.config import MembershipConfig
from crdtstream.gossip.membership import Membership, member_update
from crdtstream.gossip.messages import Message

CONFIG = MembershipConfig(probe_interval_ms=100, probe_timeout_ms=50)
STEP_MS = 10


class Group:
    """Membership instances wired by direct calls; a message to or from a down node is lost."""

    def __init__(self, names: list[str], seed: int = 7) -> None:
        self.now_ms = 0
        self.down: set[str] = set()
        self.sent: list[tuple[str, Message]] = []
        self.nodes: dict[str, Membership] = {}
        for index, name in enumerate(names):
            self.add(name, seeds=names[:1], seed=seed + index)

    def add(self, name: str, seeds: list[str], seed: int) -> Membership:
        node = Membership(name, f"memory://{name}", f"{name}~0", CONFIG, random.Random(seed), seeds)
        self.nodes[name] = node
        return node

    def deliver(self, sender: str, messages: list[Message]) -> None:
        queue = [(sender, message) for message in messages]
        while queue:
            source, message = queue.pop(0)
            self.sent.append((source, message))
            if source in self.down or message.peer_id in self.down:
                continue
            receiver = self.nodes[message.peer_id]
            replies = receiver.step(source, message.tag, message.body, self.now_ms)
            if source not in receiver.rules_mismatches:
                for update in self.nodes[source].piggyback():
                    receiver.apply(update, self.now_ms)
            queue.extend((message.peer_id, reply) for reply in replies)

    def run(self, duration_ms: int) -> None:
        end_ms = self.now_ms + duration_ms
        while self.now_ms < end_ms:
            self.now_ms += STEP_MS
            for name, node in self.nodes.items():
                if name not in self.down:
                    self.deliver(name, node.tick(self.now_ms))

    def status(self, observer: str, member: str) -> str:
        return self.nodes[observer].members[member].status


def test_nodes_join_through_a_seed_and_learn_every_member() -> None:
    """Reference: memberlist Join — push the table to the seeds, merge their answer."""
    group = Group(["a", "b", "c", "d"])
    group.run(2_000)
    for name, node in group.nodes.items():
        assert sorted(node.members) == ["a", "b", "c", "d"], name
        assert all(m.status == "alive" for m in node.members.values()), name


def test_a_silent_member_is_pinged_indirectly_then_suspected_then_declared_dead() -> None:
    """Reference: SWIM §3.1 (ping, ping-req through k members) and §4.2 (suspicion)."""
    group = Group(["a", "b", "c", "d"])
    group.run(2_000)
    group.down.add("d")
    group.run(300)
    assert any(m.tag == wire.Tag.SWIM_PING_REQ and m.body[1] == "d" for _, m in group.sent)
    assert "suspect" in {group.status(name, "d") for name in "abc"}
    group.run(15_000)
    assert {group.status(name, "d") for name in "abc"} == {"dead"}
    assert all("d" not in group.nodes[name].live_peers() for name in "abc")


def test_a_suspected_member_refutes_with_a_higher_incarnation() -> None:
    """Reference: SWIM §4.2 — the suspected member increments its incarnation number."""
    group = Group(["a", "b", "c"])
    group.run(1_000)
    accusation = member_update(group.nodes["a"].members["c"], "suspect", "a")
    group.nodes["a"].apply(accusation, group.now_ms)
    assert group.status("a", "c") == "suspect"
    group.run(1_000)
    assert group.nodes["c"].me.incarnation >= 1
    assert group.nodes["c"].stats.refuted >= 1
    assert {group.status(name, "c") for name in "ab"} == {"alive"}


def test_a_reachable_member_answers_through_a_relay_and_stays_alive() -> None:
    """Reference: SWIM §3.1 — an indirect ack through a ping-req counts as an ack."""
    group = Group(["a", "b", "c"])
    group.run(1_000)
    prober = group.nodes["a"]
    prober._probe = None
    prober._timers.next_probe_ms = group.now_ms
    prober._timers.probe_order = ["c"]
    first = prober.tick(group.now_ms)
    ping = next(m for m in first if m.tag == wire.Tag.SWIM_PING)
    assert ping.peer_id == "c"
    # The direct ping is lost; the relay through b gets the ack back.
    group.now_ms += CONFIG.probe_timeout_ms
    indirect = [m for m in prober.tick(group.now_ms) if m.tag == wire.Tag.SWIM_PING_REQ]
    assert [m.peer_id for m in indirect] == ["b"]
    group.deliver("a", indirect)
    assert probe_acked(prober)


def probe_acked(membership: Membership) -> bool:
    """Whether the probe under way was acknowledged (read anew: stepping changed it)."""
    probe = membership._probe
    assert probe is not None
    return probe.acked


def test_a_relay_that_hears_nothing_answers_with_a_nack() -> None:
    """Reference: Lifeguard §4.3 — nack from the relay so the prober can judge its own health."""
    group = Group(["a", "b", "c"])
    group.run(1_000)
    relay = group.nodes["b"]
    relay.step("a", wire.Tag.SWIM_PING_REQ, [999, "c"], group.now_ms)
    later = relay.tick(group.now_ms + CONFIG.probe_timeout_ms)
    assert Message("a", wire.Tag.SWIM_NACK, [999]) in later


def test_independent_confirmations_shorten_the_suspicion_timeout() -> None:
    """Reference: Lifeguard §4.2 — timeout from max down to min as log(confirmations) grows."""
    group = Group([f"n{index}" for index in range(8)])
    group.run(3_000)
    observer = group.nodes["n0"]
    target = observer.members["n7"]
    observer.apply(member_update(target, "suspect", "n1"), group.now_ms)
    suspicion = observer._suspicions["n7"]
    alone = suspicion.timeout_ms()
    assert alone == suspicion.timeout_ms_max
    for confirmer in ("n2", "n3"):
        observer.apply(member_update(target, "suspect", confirmer), group.now_ms)
    assert suspicion.timeout_ms() == suspicion.timeout_ms_min < alone


def test_repeated_failed_probes_raise_the_local_health_score() -> None:
    """Reference: Lifeguard §4.1 — missed acks and nacks stretch this node's probe period."""
    group = Group(["a", "b", "c"])
    group.run(1_000)
    group.down.update({"b", "c"})
    group.run(600)
    assert group.nodes["a"].awareness >= 1


def test_a_leaving_member_is_marked_left_and_no_longer_probed() -> None:
    """Reference: memberlist Leave — a graceful leave is not a failure."""
    group = Group(["a", "b", "c"])
    group.run(1_000)
    group.deliver("c", group.nodes["c"].leave(group.now_ms))
    group.down.add("c")
    group.run(500)
    assert {group.status(name, "c") for name in "ab"} == {"left"}
    assert group.nodes["a"].live_peers() == ["b"]


def test_a_member_declared_dead_comes_back_after_the_partition_heals() -> None:
    """Reference: memberlist push-pull — the table exchange reaches members believed dead."""
    group = Group(["a", "b", "c"])
    group.run(1_000)
    group.down.add("c")
    group.run(10_000)
    assert group.status("a", "c") == "dead"
    group.down.clear()
    group.run(6_000)
    assert {group.status(name, "c") for name in "ab"} == {"alive"}
    assert group.nodes["c"].me.incarnation >= 1


def test_a_restarted_node_overturns_its_old_row_with_a_new_replica() -> None:
    group = Group(["a", "b", "c"])
    group.run(1_000)
    group.nodes["c"] = Membership(
        "c", "memory://c", "c~new", CONFIG, random.Random(99), seeds=["a"]
    )
    group.run(3_000)
    assert {group.nodes[name].members["c"].replica for name in "ab"} == {"c~new"}


def test_a_healthy_cluster_raises_no_suspicion() -> None:
    """Reference: Lifeguard §1 — false positives are the failure detector's main cost."""
    group = Group([f"n{index}" for index in range(10)], seed=3)
    group.run(20_000)
    for name, node in group.nodes.items():
        assert node.stats.suspected == 0, name
        assert node.stats.probes > 0, name


def test_a_failure_in_a_larger_cluster_reaches_every_member() -> None:
    """Reference: SWIM §4 — infection-style dissemination of the failure to all members."""
    names = [f"n{index}" for index in range(24)]
    group = Group(names, seed=11)
    group.run(4_000)
    assert all(len(node.live_peers()) == 23 for node in group.nodes.values())
    group.down.add("n17")
    group.run(20_000)
    survivors = [name for name in names if name != "n17"]
    assert {group.status(name, "n17") for name in survivors} == {"dead"}
    assert all(group.status(a, b) == "alive" for a in survivors for b in survivors)


def test_a_peer_with_other_policy_rules_is_refused_on_both_sides() -> None:
    """DESIGN §3: a fingerprint of the rules is exchanged when peers meet; a mismatch is refused."""
    group = Group(["a", "b"])
    group.nodes["c"] = Membership(
        "c", "memory://c", "c~0", CONFIG, random.Random(5), ["a"], rules_fingerprint="other"
    )
    group.run(2_000)
    assert sorted(group.nodes["a"].members) == ["a", "b"]
    assert sorted(group.nodes["c"].members) == ["c"]
    assert group.nodes["a"].rules_mismatches == {"c": "other"}
    assert group.nodes["c"].rules_mismatches == {"a": ""}
    group.nodes["c"].rules_fingerprint = ""
    group.run(2_000)
    assert sorted(group.nodes["a"].members) == ["a", "b", "c"]
    assert group.nodes["a"].rules_mismatches == {}


def test_a_replica_replaced_by_a_restart_is_known_retired_everywhere() -> None:
    group = Group(["a", "b", "c"])
    group.run(1_000)
    group.nodes["c"] = Membership(
        "c", "memory://c", "c~new", CONFIG, random.Random(99), seeds=["a"]
    )
    group.run(3_000)
    assert all("c~0" in group.nodes[name].retired_replicas for name in "abc")
    assert not any("c~new" in group.nodes[name].retired_replicas for name in "abc")


def test_a_removal_sticks_to_the_replica_and_only_a_new_one_comes_back() -> None:
    group = Group(["a", "b", "c"])
    group.run(1_000)
    group.down.add("c")  # c only paused: it will answer again with its old replica
    assert group.nodes["a"].remove("c", group.now_ms)
    group.run(3_000)
    assert {group.status(name, "c") for name in "ab"} == {"removed"}
    group.down.clear()
    group.run(6_000)  # c refutes with higher incarnations: ignored, its replica is removed
    assert {group.status(name, "c") for name in "ab"} == {"removed"}
    group.nodes["c"] = Membership(
        "c", "memory://c", "c~wiped", CONFIG, random.Random(98), seeds=["a"]
    )
    group.run(3_000)
    assert {group.status(name, "c") for name in "ab"} == {"alive"}
    assert {group.nodes[name].members["c"].replica for name in "ab"} == {"c~wiped"}
