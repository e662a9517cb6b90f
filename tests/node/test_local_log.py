"""The local write-ahead log: record format on both disks, torn tails, truncation at a snapshot,
group commit, and replay into a restarted node."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from crdtstream.clock import ManualClock
from crdtstream.config import MembershipConfig, PolicyRule
from crdtstream.errors import StorageError
from crdtstream.node import Node, NodeConfig, PeerAddress
from crdtstream.storage.local_log import LOG_SUFFIX, DirectoryDisk, Disk, LocalLog, MemoryDisk
from tests.node.engine_calls import windows
from transports.memory import FaultOptions, MemoryNetwork, memory_address


@pytest.fixture(params=["memory", "directory"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Disk:
    return MemoryDisk() if request.param == "memory" else DirectoryDisk(tmp_path / "disk")


def test_records_survive_only_once_synced(disk: Disk) -> None:
    log, records = LocalLog.open(disk)
    assert records == []
    log.append(b"one")
    log.append(b"two")
    log.sync()
    log.append(b"lost in the crash")
    assert log.unsynced_records == 1
    _, records = LocalLog.open(disk)  # a crash: the buffer is gone with the process
    assert records == [b"one", b"two"]


def test_a_torn_tail_is_cut_and_the_log_goes_on(disk: Disk) -> None:
    log, _ = LocalLog.open(disk)
    log.append(b"whole")
    log.sync()
    log.append(b"torn")
    log.sync()
    (name,) = disk.names(LOG_SUFFIX)
    data = disk.read(name)
    assert data is not None
    disk.write_atomically(name, data[:-2])  # the crash cut the last append short
    log, records = LocalLog.open(disk)
    assert records == [b"whole"]
    log.append(b"after")
    log.sync()
    _, records = LocalLog.open(disk)
    assert records == [b"whole", b"after"]


def test_damage_before_the_last_segment_is_refused(disk: Disk) -> None:
    log, _ = LocalLog.open(disk)
    log.append(b"first")
    log.sync()
    log, _ = LocalLog.open(disk)  # a second segment
    log.append(b"second")
    log.sync()
    first = disk.names(LOG_SUFFIX)[0]
    disk.write_atomically(first, b"\x00\x00\x00\x05garbage")
    with pytest.raises(StorageError, match="bad record"):
        LocalLog.open(disk)


def test_restart_after_a_snapshot_drops_every_record(disk: Disk) -> None:
    log, _ = LocalLog.open(disk)
    log.append(b"covered by the snapshot")
    log.sync()
    log.restart()
    log.append(b"new")
    log.sync()
    _, records = LocalLog.open(disk)
    assert records == [b"new"]
    assert len(disk.names(LOG_SUFFIX)) == 1


def test_the_log_counts_the_bytes_a_restart_would_replay(disk: Disk) -> None:
    log, _ = LocalLog.open(disk)
    log.append(b"x" * 100)
    assert log.bytes == 0  # buffered only
    log.sync()
    written = log.bytes
    assert written > 100  # the record's header too
    reopened, _ = LocalLog.open(disk)
    assert reopened.bytes == written
    reopened.restart()
    assert reopened.bytes == 0


def _node(
    disk: MemoryDisk,
    network: MemoryNetwork,
    clock: ManualClock,
    durability: str = "fsync",
    log_bytes_max: int = 64 * 1024 * 1024,
) -> Node:
    config = NodeConfig(
        node_id="a",
        listen_address=memory_address("a"),
        snapshot_interval_ms=60_000,
        durability=durability,
        log_bytes_max=log_bytes_max,
    )
    return Node(config, network.endpoint("a"), clock, random.Random(1), disk=disk)


def test_one_fsync_answers_every_write_of_an_event_loop_turn() -> None:
    disk, clock = MemoryDisk(), ManualClock(1_000_000)
    network = MemoryNetwork(1, FaultOptions())
    node = _node(disk, network, clock)

    async def writes() -> list[int]:
        answers = await asyncio.gather(*(node.write("hits", "add", 1) for _ in range(32)))
        return [answer.accepted for answer in answers]

    syncs_before = disk.syncs
    assert asyncio.run(writes()) == [1] * 32
    assert disk.syncs - syncs_before == 1
    assert node.engine.writes_awaiting_log == 0


def test_an_acknowledged_write_is_replayed_after_a_crash_and_not_counted_twice() -> None:
    disk, clock = MemoryDisk(), ManualClock(1_000_000)
    network = MemoryNetwork(1, FaultOptions())
    node = _node(disk, network, clock)
    ticket = node.engine.write("hits", "add", 5)
    assert not ticket.done  # not acknowledged before it is durable
    node.pump()
    assert ticket.result().accepted == 1
    unacknowledged = node.engine.write("hits", "add", 100)
    node.transport.close()  # crash before the next pump: that write was never answered
    assert not unacknowledged.done
    for _ in range(3):  # and crash again, twice, right after restarting
        node = _node(disk, network, clock)
        assert node.identity.resumed
        assert sum(float(str(w.value)) for w in windows(node, "hits")) == 5.0
        node.transport.close()
    node = _node(disk, network, clock)
    node.snapshot()  # the snapshot covers the log, which starts afresh
    node.close()
    node = _node(disk, network, clock)
    assert sum(float(str(w.value)) for w in windows(node, "hits")) == 5.0


def _cluster_node(
    name: str, disk: MemoryDisk, network: MemoryNetwork, clock: ManualClock, **options: object
) -> Node:
    names = ["a", "b", "c"]
    config = NodeConfig(
        node_id=name,
        listen_address=memory_address(name),
        peers=tuple(PeerAddress(o, memory_address(o)) for o in names if o != name),
        membership=MembershipConfig.local(),
        policy=(PolicyRule("q.*", "quorum"),),
        snapshot_interval_ms=60_000,
        tick_interval_ms=10,
        **options,  # type: ignore[arg-type]
    )
    return Node(config, network.endpoint(name), clock, random.Random(name.encode()[0]), disk=disk)


def test_a_confirmed_quorum_write_is_on_the_disk_of_a_member_that_acknowledged_it() -> None:
    clock, network = ManualClock(1_000_000), MemoryNetwork(3, FaultOptions())
    disks = {name: MemoryDisk() for name in "abc"}
    nodes = {name: _cluster_node(name, disks[name], network, clock) for name in "abc"}
    for _ in range(100):  # members meet
        clock.advance(10)
        network.advance(10)
        for node in nodes.values():
            node.pump()
    for amount in (7, 5):  # the second comes well within statsd_sync_ms of the first
        ticket = nodes["a"].engine.write("q.orders", "add", amount)
        while not ticket.done:
            clock.advance(1)
            network.advance(1)
            for node in nodes.values():
                node.pump()
        assert ticket.result().accepted == 1
    for node in nodes.values():  # every node crashes at once; the writer also loses its disk
        node.transport.close()
    disks["a"] = MemoryDisk()
    held = [
        sum(
            float(str(w.value))
            for w in windows(_cluster_node(n, disks[n], network, clock), "q.orders")
        )
        for n in "bc"
    ]
    assert max(held) == 12.0, held


def _crashed_here(disk: MemoryDisk, clock: ManualClock) -> float:
    """The "lines" total a node restarted on a copy of ``disk`` holds (a crash now)."""
    restarted = _node(disk.copy(), MemoryNetwork(2, FaultOptions()), clock)
    restarted.transport.close()
    return sum(float(str(w.value)) for w in windows(restarted, "lines"))


@pytest.mark.parametrize("durability", ["fsync", "none"])
def test_statsd_lines_are_logged_within_statsd_sync_ms(durability: str) -> None:
    clock, network = ManualClock(1_000_000), MemoryNetwork(1, FaultOptions())
    disk = MemoryDisk()
    node = _node(disk, network, clock, durability=durability)
    sync_ms = node.config.statsd_sync_ms
    node.pump()
    node.ingest_statsd([b"lines:3|c"])
    node.pump()
    clock.advance(sync_ms - 1)
    node.pump()
    assert _crashed_here(disk, clock) == 0.0  # within the stated loss bound
    clock.advance(1)
    node.pump()
    assert _crashed_here(disk, clock) == (3.0 if durability == "fsync" else 0.0)
    assert (disk.names(LOG_SUFFIX) != []) == (durability == "fsync")


def test_a_log_past_its_size_bound_is_folded_into_a_snapshot() -> None:
    disk, clock = MemoryDisk(), ManualClock(1_000_000)
    network = MemoryNetwork(1, FaultOptions())
    node = _node(disk, network, clock, log_bytes_max=4_096)
    acknowledged = 0
    sizes = []
    for round_ in range(60):  # far fewer rounds than the 60 s snapshot interval would need
        tickets = [node.engine.write(f"key.{round_}.{i}", "add", 1) for i in range(20)]
        node.pump()
        acknowledged += sum(ticket.result().accepted for ticket in tickets)
        clock.advance(10)
        sizes.append(sum(len(disk.read(name) or b"") for name in disk.names(LOG_SUFFIX)))
    assert max(sizes) < 4_096 + 4_096  # never more than the bound plus one pump's record
    assert min(sizes[10:]) < max(sizes)  # it did start afresh, more than once
    node.transport.close()  # crash: the snapshot and the log's tail hold every write
    node = _node(disk, network, clock)
    values = [windows(node, f"key.{r}.{i}")[0].value for r in range(60) for i in range(20)]
    assert values == [1] * 1_200
    assert acknowledged == 1_200


class FailingDisk(MemoryDisk):
    """A disk whose appends fail once ``failing`` is set, as a full or broken device does."""

    failing = False

    def append_durably(self, name: str, data: bytes) -> None:
        if self.failing:
            raise OSError(28, "No space left on device")
        super().append_durably(name, data)


def test_a_failed_sync_stops_the_node_and_acknowledges_nothing() -> None:
    disk, clock = FailingDisk(), ManualClock(1_000_000)
    network = MemoryNetwork(1, FaultOptions())
    node = _node(disk, network, clock)
    ticket = node.engine.write("hits", "add", 5)
    node.pump()
    assert ticket.result().accepted == 1
    disk.failing = True
    waiting = node.engine.write("hits", "add", 7)
    with pytest.raises(StorageError, match="No space left"):
        node.pump()
    assert not waiting.done  # never answered: a client retries elsewhere
    assert node.engine.writes_awaiting_log == 1
