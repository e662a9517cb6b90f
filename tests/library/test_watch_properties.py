"""Watch against the node's own state history (Hypothesis, seeded by the ``ci`` profile).

A node of a simulated cluster takes random writes (counters, a set, a strong counter) while its
clock moves (windows close and go final); after each coalescing pass the state a subscriber
rebuilds from its events must equal what the node itself reads. Properties: every change is
delivered once and in order per key; a subscriber that falls behind its buffer gets a reset,
never a gap; a resume from a sequence delivers exactly the changes after it.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

import crdtstream
from crdtstream.config import WindowConfig
from crdtstream.engine import Ticket
from crdtstream.node import Node
from crdtstream.replica import EngineSource
from crdtstream.testing import Cluster
from crdtstream.watch import Change, ChangeFeed, Progress, Reset, Subscriber, WatchEvent

WINDOW = WindowConfig(size_ms=1_000, allowed_lateness_ms=300, retention_windows=1_000)
KEYS = ("api.a", "api.b", "other")
State = dict[tuple[str, tuple[int, int]], tuple[object, bool]]


@dataclass
class Reader:
    """A subscriber and the state it rebuilt from its events."""

    subscriber: Subscriber
    state: State = field(default_factory=dict)
    events: list[WatchEvent] = field(default_factory=list)
    last_sequence: int = 0

    def drain(self) -> None:
        while (event := self.subscriber.pop()) is not None:
            self.events.append(event)
            if isinstance(event, Reset):
                self.state = {(c.key, c.window): (c.value, c.final) for c in event.snapshot}
                self.last_sequence = event.sequence
            elif isinstance(event, Change):
                assert event.sequence > self.last_sequence, "a change out of order or repeated"
                self.last_sequence = event.sequence
                self.state[(event.key, event.window)] = (event.value, event.final)
            else:
                assert isinstance(event, Progress)
                assert event.sequence >= self.last_sequence


def _node_state(node: Node, pattern: str) -> State:
    """What the node itself reads now (one eventual read per key, the engine's own read path,
    not the feed's window reads), for the keys a subscriber watches."""
    engine = node.engine
    keys = [name for names in engine.store.kind_keys.values() for name in names]
    keys += EngineSource(engine).strong_keys()
    state: State = {}
    for key in keys:
        if not fnmatch.fnmatchcase(key, pattern):
            continue
        for value in engine.read(key, consistency="eventual").result().windows:
            state[(key, (value.start_ms, value.end_ms))] = (value.value, value.final)
    return state


def _settle(cluster: Cluster, ticket: Ticket) -> None:
    for _ in range(1_000):
        if ticket.done:
            return
        cluster.step()
    raise AssertionError("a strong write did not complete")


operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(KEYS), st.integers(1, 5)),
        st.tuples(st.just("insert"), st.just("api.set"), st.sampled_from("xyz")),
        st.tuples(st.just("remove"), st.just("api.set"), st.sampled_from("xyz")),
        st.tuples(st.just("strong"), st.just("api.quota"), st.integers(1, 3)),
        st.tuples(st.just("run"), st.just(""), st.sampled_from([10, 100, 700, 2_000])),
        st.tuples(st.just("poll"), st.just(""), st.just(0)),
        st.tuples(st.just("drain"), st.just(""), st.just(0)),
        st.tuples(st.just("resume"), st.just(""), st.just(0)),
    ),
    min_size=1,
    max_size=40,
)


@given(operations=operations, lag_buffer=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_subscribers_rebuild_the_nodes_state_exactly(
    operations: list[tuple[str, str, int]], lag_buffer: int, seed: int
) -> None:
    cluster = crdtstream.testing.cluster(
        1, seed=seed, policy={"api.quota": "strong"}, window=WINDOW, watch_interval_ms=100
    )
    node = cluster.nodes["n1"]
    feed: ChangeFeed = cluster.feed_of("n1")
    cluster.run(500)  # the lone voter elects itself
    full = Reader(feed.subscribe("api.*", lambda: None, buffer_events_max=100_000))
    lagging = Reader(feed.subscribe("api.*", lambda: None, buffer_events_max=lag_buffer))
    resumed: list[tuple[int, Reader]] = []
    for op, key, amount in operations:
        now = cluster.clock.now_ms()
        if op == "add":
            node.engine.write(key, "add", amount, now_ms=now).result()
        elif op in ("insert", "remove"):
            node.engine.write(key, op, key and str(amount), now_ms=now).result()
        elif op == "strong":
            ticket = node.engine.write(key, "conditional_add", amount, limit=10**6, now_ms=now)
            _settle(cluster, ticket)
            ticket.result()
        elif op == "run":
            cluster.run(amount)
        elif op == "poll":
            feed.poll(cluster.clock.monotonic_ms())
            full.drain()
            assert full.state == _node_state(node, "api.*"), f"seed={seed}"
        elif op == "drain":
            lagging.drain()
        else:
            full.drain()
            since = full.last_sequence
            resumed.append((since, Reader(feed.subscribe("api.*", lambda: None, since=since))))
    feed.poll(cluster.clock.monotonic_ms())
    expected = _node_state(node, "api.*")
    for reader in (full, lagging):
        reader.drain()
        assert reader.state == expected, f"seed={seed}"
    # The full reader never fell behind: every change exactly once, in order, each a change.
    assert not any(isinstance(e, Reset) for e in full.events)
    changes = [e for e in full.events if isinstance(e, Change)]
    assert [c.sequence for c in changes] == sorted({c.sequence for c in changes})
    last: dict[tuple[str, tuple[int, int]], Change] = {}
    for change in changes:
        before = last.get((change.key, change.window))
        if before is not None:
            assert change.version > before.version, f"seed={seed}"
            assert (before.value, before.final) != (change.value, change.final), f"seed={seed}"
            assert not before.final, f"a final window changed, seed={seed}"
        last[(change.key, change.window)] = change
    # The lagging reader saw a reset whenever it overflowed (a later reset replaces an unread
    # one), and its rebuilt state above shows it never missed a change.
    resets = [e for e in lagging.events if isinstance(e, Reset)]
    assert bool(resets) == bool(lagging.subscriber.resets)
    assert len(resets) <= lagging.subscriber.resets
    # A resume delivers exactly the changes after its sequence (the history holds them all).
    for since, reader in resumed:
        reader.drain()
        assert [e for e in reader.events if isinstance(e, Change)] == [
            c for c in changes if c.sequence > since
        ], f"seed={seed}"
        assert reader.state == {
            (k, w): v for (k, w), v in expected.items() if (k, w) in reader.state
        }
    cluster.close()


def test_a_resume_from_before_the_history_is_a_reset_with_the_whole_state() -> None:
    cluster = crdtstream.testing.cluster(1, seed=1, window=WINDOW)
    node = cluster.nodes["n1"]
    feed = ChangeFeed(EngineSource(node.engine), history_changes_max=2)
    for amount in range(1, 5):
        node.engine.write(f"api.k{amount}", "add", amount, now_ms=cluster.clock.now_ms())
        feed.poll(cluster.clock.monotonic_ms())
    reader = Reader(feed.subscribe("api.*", lambda: None, since=1))
    reader.drain()
    assert isinstance(reader.events[0], Reset)
    assert reader.state == _node_state(node, "api.*")
    kept = Reader(feed.subscribe("api.*", lambda: None, since=2))
    kept.drain()
    assert [e.key for e in kept.events if isinstance(e, Change)] == ["api.k3", "api.k4"]
    cluster.close()


def test_changes_within_one_interval_are_coalesced_and_bookmarks_follow() -> None:
    cluster = crdtstream.testing.cluster(1, seed=2, window=WINDOW)
    node = cluster.nodes["n1"]
    feed = ChangeFeed(EngineSource(node.engine), progress_interval_ms=1_000)
    reader = Reader(feed.subscribe("*", lambda: None))
    feed.poll(cluster.clock.monotonic_ms())
    for _ in range(1_000):
        node.engine.write("hits", "add", 1, now_ms=cluster.clock.now_ms())
    feed.poll(cluster.clock.monotonic_ms())
    cluster.clock.advance(1_000)
    feed.poll(cluster.clock.monotonic_ms())
    reader.drain()
    changes = [e for e in reader.events if isinstance(e, Change)]
    assert [(c.key, c.value) for c in changes] == [("hits", 1_000.0)]
    assert isinstance(reader.events[-1], Progress)
    assert reader.events[-1].sequence == changes[-1].sequence
    cluster.close()


def test_a_window_going_final_is_reported_once_as_final() -> None:
    """Finality comes from the watermarks, not from a write: the feed must notice it alone."""
    cluster = crdtstream.testing.cluster(1, seed=3, window=WINDOW)
    node = cluster.nodes["n1"]
    feed = ChangeFeed(EngineSource(node.engine))
    reader = Reader(feed.subscribe("*", lambda: None))
    node.engine.write("hits", "add", 2, now_ms=cluster.clock.now_ms())
    feed.poll(cluster.clock.monotonic_ms())
    cluster.run(3_000)  # the window closes and goes final; nothing is written
    feed.poll(cluster.clock.monotonic_ms())
    feed.poll(cluster.clock.monotonic_ms())
    reader.drain()
    assert [(e.value, e.final) for e in reader.events if isinstance(e, Change)] == [
        (2.0, False),
        (2.0, True),
    ]
    cluster.close()


@given(
    writes=st.lists(
        st.tuples(
            st.sampled_from(["n1", "n2", "n3"]),
            st.sampled_from(KEYS),
            st.integers(1, 5),
            st.sampled_from([0, 30, 300, 1_500]),
            st.sampled_from(["none", "isolate", "heal"]),
        ),
        min_size=1,
        max_size=25,
    ),
    seed=st.integers(0, 2**16),
)
def test_a_watch_follows_what_gossip_merges_into_its_node(
    writes: list[tuple[str, str, int, int, str]], seed: int
) -> None:
    """Changes that arrive by gossip (merged deltas, partitions healed) are reported like local
    ones: after every pass, the subscriber on n3 holds exactly n3's state."""
    cluster = crdtstream.testing.cluster(3, seed=seed, window=WINDOW, watch_interval_ms=50)
    watched = cluster.nodes["n3"]
    feed = cluster.feed_of("n3")
    reader = Reader(feed.subscribe("api.*", lambda: None, buffer_events_max=100_000))
    for name, key, amount, pause_ms, fault in writes:
        node = cluster.nodes[name]
        node.engine.write(key, "add", amount, now_ms=cluster.clock.now_ms()).result()
        if fault == "isolate":
            cluster.isolate(name)
        elif fault == "heal":
            cluster.heal()
        cluster.run(pause_ms)
        feed.poll(cluster.clock.monotonic_ms())
        reader.drain()
        assert reader.state == _node_state(watched, "api.*"), f"seed={seed}"
    cluster.heal()
    cluster.run(3_000)
    feed.poll(cluster.clock.monotonic_ms())
    reader.drain()
    assert reader.state == _node_state(watched, "api.*"), f"seed={seed}"
    assert not any(isinstance(e, Reset) for e in reader.events)
    cluster.close()
