"""The driver: the one place that owns the clock, the transport and the disk.

Rules of this file: no protocol logic and no mode routing. The node reads the clock once per
round and hands that reading and the received frames to the pure
:class:`~crdtstream.engine.Engine`; it sends what the engine's outbox holds, connects the members
gossip found, writes snapshots, and turns the engine's tickets into awaitables
(:meth:`Node.write`, :meth:`Node.read`). The same code runs over ZeroMQ with the system clock
and over the seeded simulated network with a manual clock: :meth:`Node.pump` does one round of
work without waiting, and :meth:`Node.run` is an asyncio loop around it that sleeps on the
transport.

Durability (``durability = "fsync"``, with a disk): the store's changes go to the local
write-ahead log (:mod:`crdtstream.storage.local_log`), synced once per pump before any frame
leaves and before the writes waiting for it are answered, and at least every
``statsd_sync_ms`` while statsd lines change the store. The changed windows of bounded keys go
to the same log in the same sync (``BOUNDED_STATE`` records, and ``BOUNDED_RETIREMENT`` for
each retirement applied), and a snapshot writes them to ``bounded.snapshot`` before the log is
truncated: a restarted node resumes its bounded row and the retirements it knew.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from crdtstream import wire
from crdtstream.clock import Clock
from crdtstream.engine import Answer, Engine, Ticket
from crdtstream.errors import (
    DecodeError,
    MergeError,
    PayloadTooLargeError,
    StorageError,
    TransportError,
)
from crdtstream.node.config import NodeConfig
from crdtstream.node.identity import Identity, load_identity, mark_clean
from crdtstream.raft.storage import DurableStorage
from crdtstream.storage.local_log import DirectoryDisk, Disk, LocalLog
from crdtstream.storage.paxos_acceptors import AcceptorFile
from crdtstream.storage.snapshot import restore
from crdtstream.storage.snapshot import snapshot as encode_snapshot
from crdtstream.storage.wal import WalStorage
from crdtstream.storage.wal_format import decode_records, encode_record
from crdtstream.transport import Transport
from crdtstream.window.delta import StoreDelta
from crdtstream.window.store import WindowStore

__all__ = ["DriverCounters", "Node"]

SNAPSHOT_FILE = "store.snapshot"
BOUNDED_RECORD_TAGS: Final = frozenset((wire.Tag.BOUNDED_STATE, wire.Tag.BOUNDED_RETIREMENT))
"""The local log's records of the bounded keys (the rest are the store's deltas)."""

BOUNDED_SNAPSHOT_FILE = "bounded.snapshot"
"""The bounded keys' state at the last snapshot: ``BOUNDED_RETIREMENT`` then ``BOUNDED_STATE``
frames in the local log's record format, written before the log is truncated."""
RAFT_DIRECTORY = "raft"
PAXOS_DIRECTORY = "paxos"


@dataclass(slots=True)
class DriverCounters:
    """What the driver did with the engine's output."""

    frames_sent: int = 0
    frames_oversize: int = 0
    frames_unsendable: int = 0
    peers_unusable: int = 0


class Node:
    """One crdtstream node: the engine driven over a transport, a clock and a data directory."""

    def __init__(
        self,
        config: NodeConfig,
        transport: Transport,
        clock: Clock,
        rng: random.Random,
        *,
        raft_storage: DurableStorage | None = None,
        disk: Disk | None = None,
    ) -> None:
        """Open the data directory and start; ``raft_storage`` overrides the Raft log (on disk
        under the data directory, in memory without one; simulations pass one that can crash),
        ``disk`` the snapshot, identity and local log (the data directory by default;
        simulations pass a :class:`~crdtstream.storage.local_log.MemoryDisk`)."""
        self.config = config
        self.transport = transport
        self.clock = clock
        if disk is None and config.data_dir is not None:
            disk = DirectoryDisk(config.data_dir)
        self.disk = disk
        log_writes = disk is not None and config.durability != "none"
        self.identity: Identity = load_identity(disk, config.node_id, rng, logged=log_writes)
        self.counters = DriverCounters()
        self._known_addresses: dict[str, str] = {}
        self._unusable_addresses: set[str] = set()
        # An address the operator gave for a peer by id is kept over the one that peer
        # advertises through gossip: behind a port forward, NAT or a proxy (the fault proxies of
        # ``bench/cluster.py``) the advertised address may not be the way to reach it from here.
        self._configured_peers = frozenset(
            peer.node_id for peer in (*config.peers, *config.raft_voters)
        )
        for peer in (*config.peers, *config.raft_voters):
            if peer.node_id != config.node_id and peer.node_id not in self._known_addresses:
                self._known_addresses[peer.node_id] = peer.address
                transport.add_peer(peer.node_id, peer.address)
        store, self._log, bounded_records = self._open_store(log_writes)
        self._logged_version = store.version
        self._synced_ms = clock.monotonic_ms()
        try:
            self.engine = self._start_engine(store, rng, raft_storage, bounded_records)
        except DecodeError as error:
            raise StorageError(f"bounded state in the data directory unusable: {error}") from error
        self._flush_pending = False
        self._next_snapshot_ms = clock.monotonic_ms() + config.snapshot_interval_ms
        self._closed = False

    def _start_engine(
        self,
        store: WindowStore,
        rng: random.Random,
        raft_storage: DurableStorage | None,
        bounded_records: list[bytes],
    ) -> Engine:
        config, clock = self.config, self.clock
        return Engine(
            dataclasses.replace(config.engine_config(), log_writes=self._log is not None),
            self.identity.replica,
            store,
            rng,
            now_ms=clock.now_ms(),
            monotonic_ms=clock.monotonic_ms(),
            raft_storage=raft_storage if raft_storage is not None else self._open_raft_log(),
            send_now=self._send_outbox,
            paxos_storage=self._open_acceptor_file(),
            bounded_records=bounded_records,
        )

    # ------------------------------------------------------------------ requests

    async def write(
        self,
        key: str,
        op: str,
        value: float | int | str | bytes,
        *,
        kind: str | None = None,
        timestamp_ms: int | None = None,
        idempotency_key: str | None = None,
        limit: float | int | None = None,
        weight: float = 1.0,
        relative: bool = False,
    ) -> Answer:
        """:meth:`Engine.write <crdtstream.engine.Engine.write>` at the clock's now, awaited:
        returns once the write is as durable as the key's mode promises, or raises its error."""
        ticket = self.engine.write(
            key,
            op,
            value,
            kind=kind,
            timestamp_ms=timestamp_ms,
            idempotency_key=idempotency_key,
            limit=limit,
            weight=weight,
            relative=relative,
            now_ms=self.clock.now_ms(),
        )
        # A write that completed at once (an eventual key) costs no future and no wait.
        return ticket.result() if ticket.done else await self._settled(ticket)

    async def read(self, key: str, *, consistency: str | None = None) -> Answer:
        """:meth:`Engine.read <crdtstream.engine.Engine.read>`, awaited."""
        ticket = self.engine.read(key, consistency=consistency)
        return ticket.result() if ticket.done else await self._settled(ticket)

    async def retire_bounded_member(self, member: str) -> Answer:
        """:meth:`Engine.retire_bounded_member
        <crdtstream.engine.Engine.retire_bounded_member>`, awaited: every live node's copy of
        the rows is gathered, then the decision goes through the Raft log; its ``value`` is
        the rows retired."""
        ticket = self.engine.retire_bounded_member(member)
        return ticket.result() if ticket.done else await self._settled(ticket)

    def ingest_statsd(self, data: bytes | Sequence[bytes]) -> dict[str, object]:
        """Parse statsd/DogStatsD datagrams and apply them at the clock's now (see
        :meth:`Engine.ingest_statsd <crdtstream.engine.Engine.ingest_statsd>`)."""
        return self.engine.ingest_statsd(data, now_ms=self.clock.now_ms())

    async def _settled(self, ticket: Ticket) -> Answer:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        ticket.on_done(lambda done: _settle(future, done))
        self._flush_soon()
        return await future

    def _flush_soon(self) -> None:
        """Send the requests made during this turn of the event loop once the turn ends:
        coroutines woken together (say, by one batch's answers) send their next requests as
        one batch, without waiting for the next pump."""
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        if not self._closed:
            self.engine.flush()
            self._send_outbox()

    def status(self) -> dict[str, object]:
        """Members, gossip, transport, ingest, Raft, quorum and bounded state, as plain data."""
        engine = self.engine.status()
        counters = dataclasses.asdict(self.engine.counters) | dataclasses.asdict(self.counters)
        return {
            "node_id": self.config.node_id,
            "replica": engine["replica"],
            "watermark_ms": engine["watermark_ms"],
            "members": engine["members"],
            "gossip": engine["gossip"],
            "transport": self.transport.stats().as_dict(),
            "node": counters,
            "ingest": engine["ingest"],
            "ingest_errors": engine["ingest_errors"],
            "raft": engine["raft"],
            "paxos": engine["paxos"],
            "quorum": engine["quorum"],
            "catalog": engine["catalog"],
            "bounded": engine["bounded"],
            "bounded_replica": engine["bounded_replica"],
        }

    # ------------------------------------------------------------------ the loop

    def pump(self) -> int:
        """One round without waiting: read what arrived, step the engine at one clock reading,
        send its output, connect new members, snapshot when due.

        Returns the number of packets handled, so a caller can tell busy from idle.
        """
        packets = self.transport.receive(self.config.receive_batch_packets)
        monotonic_ms = self.clock.monotonic_ms()
        self.engine.tick(self.clock.now_ms(), monotonic_ms, packets)
        self._connect_new_members()
        self._send_outbox()
        if (
            self._log is not None
            and monotonic_ms - self._synced_ms >= self.config.statsd_sync_ms
            and (self.engine.store.version != self._logged_version or self.engine.bounded.unlogged)
        ):
            self.make_durable()  # statsd lines or bounded merges changed state, nothing sent since
        if monotonic_ms >= self._next_snapshot_ms or (
            self._log is not None and self._log.bytes >= self.config.log_bytes_max
        ):
            self._next_snapshot_ms = monotonic_ms + self.config.snapshot_interval_ms
            self.snapshot()
        return len(packets)

    async def run(self, stop: asyncio.Event) -> None:
        """Pump until ``stop`` is set, sleeping on the transport between rounds; then close."""
        try:
            while not stop.is_set():
                if self.pump():
                    await asyncio.sleep(0)
                    continue
                wait_ms = max(1, self.engine.next_gossip_ms - self.clock.monotonic_ms())
                await self.transport.wait_readable(min(wait_ms, self.config.tick_interval_ms))
        finally:
            self.close()

    def _send_outbox(self) -> None:
        """Send the engine's frames; a peer whose address is unknown yet is reached on a later
        round. A frame over the transport's limit is a bug in whichever core built it: it is
        counted (``frames_oversize``) and dropped, and the node keeps serving.

        Nothing leaves before it is durable: the log is synced first, so every state a peer
        holds (and every quorum acknowledgement) is covered by this node's disk."""
        outbox = self.engine.take_outbox()
        if self._log is not None and (outbox or self.engine.writes_awaiting_log):
            self.make_durable()
        for item in outbox:
            if item.peer_id not in self._known_addresses:
                continue
            try:
                self.transport.send(item.peer_id, item.payload)
            except PayloadTooLargeError:
                self.counters.frames_oversize += 1
                continue
            except TransportError:  # the peer was removed, or the transport closed meanwhile
                self.counters.frames_unsendable += 1
                continue
            self.counters.frames_sent += 1

    def _connect_new_members(self) -> None:
        for node_id, member in self.engine.gossip.membership.members.items():
            if node_id == self.config.node_id or not member.address:
                continue
            if node_id in self._configured_peers:
                continue
            if self._known_addresses.get(node_id) == member.address:
                continue
            if member.address in self._unusable_addresses:
                continue
            try:
                self.transport.add_peer(node_id, member.address)
            except (TransportError, ValueError):
                # A member advertising an address this transport cannot use (or, with CURVE, a
                # node without a known key): counted and left out, never fatal to this node.
                self._unusable_addresses.add(member.address)
                self.counters.peers_unusable += 1
                continue
            self._known_addresses[node_id] = member.address

    # ------------------------------------------------------------------ disk

    def _open_store(self, log_writes: bool) -> tuple[WindowStore, LocalLog | None, list[bytes]]:
        """The store restored from the snapshot with the local log replayed over it, the log to
        append to (None when ``log_writes`` is off: the replayed log is then folded into a new
        snapshot and dropped), and the bounded keys' records (snapshot's, then the log's) for
        the engine to resume this node's bounded rows from (none when ``log_writes`` is off:
        without the log, a run does not resume its previous run's rows)."""
        store = WindowStore(self.identity.replica, self.config.window)
        disk = self.disk
        if disk is None:
            return store, None, []
        data = disk.read(SNAPSHOT_FILE)
        log, logged = LocalLog.open(disk)
        saved = disk.read(BOUNDED_SNAPSHOT_FILE) or b""
        bounded, good_bytes = decode_records(saved)
        if good_bytes < len(saved):  # written atomically: damage, not a torn write
            raise StorageError(f"{BOUNDED_SNAPSHOT_FILE}: bad record at byte {good_bytes}")
        saved_records = len(bounded)
        records: list[bytes] = []
        try:
            for record in logged:
                if wire.peek_tag(record) in BOUNDED_RECORD_TAGS:
                    bounded.append(record)
                else:
                    records.append(record)
            if data is not None:
                restored = restore(data)
                if restored.replica == self.identity.replica:
                    store = restored
                else:
                    store.merge(restored.full_state())
            for record in records:
                store.merge(StoreDelta.from_bytes(record))
        except (DecodeError, MergeError) as error:
            raise StorageError(f"{SNAPSHOT_FILE} or local log unusable: {error}") from error
        if log_writes:
            return store, log, bounded
        # Without the log this run takes a fresh bounded row. The logged rows' state is folded
        # into the bounded snapshot before the log goes, so that it stays complete (a later
        # logged run may resume that row: nothing was ever sent under it that is not there).
        if len(bounded) > saved_records:
            disk.write_atomically(BOUNDED_SNAPSHOT_FILE, b"".join(map(encode_record, bounded)))
        if logged:
            disk.write_atomically(SNAPSHOT_FILE, encode_snapshot(store))
            log.restart()
        return store, None, []

    def _open_raft_log(self) -> DurableStorage | None:
        """The on-disk Raft log of a voter with a data directory (None: the engine keeps it in
        memory)."""
        voters = sorted(peer.node_id for peer in self.config.raft_voters)
        if self.config.data_dir is None or self.config.node_id not in voters:
            return None
        return WalStorage.open(self.config.data_dir / RAFT_DIRECTORY, voters)

    def _open_acceptor_file(self) -> AcceptorFile | None:
        """The Paxos acceptor's records of a voter with a data directory (None: in memory)."""
        voters = {peer.node_id for peer in self.config.raft_voters}
        if self.config.data_dir is None or self.config.node_id not in voters:
            return None
        return AcceptorFile(self.config.data_dir / PAXOS_DIRECTORY)

    def make_durable(self) -> None:
        """Append the store's changes since the last sync to the local log as one record, fsync
        it once (group commit), and answer the writes that waited for it."""
        log = self._log
        if log is None:
            return
        store = self.engine.store
        if store.version != self._logged_version:
            log.append(store.delta_since(self._logged_version).to_bytes())
            self._logged_version = store.version
        for record in self.engine.bounded.take_log_records():
            log.append(record)
        log.sync()
        self._synced_ms = self.clock.monotonic_ms()
        self.engine.logged()

    def snapshot(self) -> None:
        """Write the store to the disk atomically and durably, then start the local log afresh
        (nothing without a disk)."""
        if self.disk is None:
            return
        if self._log is not None:
            # Before the log is truncated: the bounded rows' state must outlive it.
            bounded = b"".join(map(encode_record, self.engine.bounded.snapshot_records()))
            self.disk.write_atomically(BOUNDED_SNAPSHOT_FILE, bounded)
        self.disk.write_atomically(SNAPSHOT_FILE, encode_snapshot(self.engine.store))
        if self._log is not None:
            self._log.restart()
            self._logged_version = self.engine.store.version
            self.engine.logged()

    def close(self, *, leave: bool = True) -> None:
        """Fail what is in flight, leave the cluster (best effort), write a final snapshot,
        mark a clean shutdown."""
        if self._closed:
            return
        self._closed = True
        try:
            self.engine.close()
            if leave and not self.transport.closed:
                self.engine.leave()
                self._send_outbox()
            self.snapshot()
            if self.disk is not None:
                mark_clean(self.disk, self.identity)
        finally:
            self.transport.close()
            if isinstance(self.disk, DirectoryDisk):
                self.disk.close()


def _settle(future: asyncio.Future[Answer], ticket: Ticket) -> None:
    """Resolve ``future`` from a completed ``ticket`` (once)."""
    if future.done():
        return
    if ticket.error is not None:
        future.set_exception(ticket.error)
    else:
        future.set_result(ticket.result())
