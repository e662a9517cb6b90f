"""The driver: the one place that owns the clock, the transport and the disk.

Rules of this file: no protocol logic. The node feeds time and received packets to the pure
cores (the windowed store, the gossip core) and carries out what they return: frames to send,
peers to connect, snapshots to write. The same code runs over ZeroMQ with the system clock and
over the seeded simulated network with a manual clock: :meth:`Node.pump` does one round of work
without waiting, and :meth:`Node.run` is an asyncio loop around it that sleeps on the transport.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from crdtstream import wire
from crdtstream.clock import Clock
from crdtstream.errors import (
    ConfigError,
    DecodeError,
    PayloadTooLargeError,
    StorageError,
    TransportError,
    UnavailableError,
)
from crdtstream.gossip.catalog import Catalog
from crdtstream.gossip.core import GossipCore
from crdtstream.gossip.messages import GOSSIP_TAGS, Outgoing
from crdtstream.ingest import StatsdParser
from crdtstream.ingest.batch import KindBatch
from crdtstream.node.config import NodeConfig
from crdtstream.node.identity import Identity, load_identity, mark_clean
from crdtstream.node.quorum import QUORUM_TAGS, Quorum, QuorumDone
from crdtstream.node.strong import Completion, ReadAnswer, StrongReplica
from crdtstream.node.strong_client import StrongClient
from crdtstream.policy import Policy
from crdtstream.raft.crashable import CrashableStorage
from crdtstream.raft.state_machine import Command, Result
from crdtstream.raft.wal import DurableStorage, WalStorage
from crdtstream.transport import Transport
from crdtstream.window.delta import StoreDelta
from crdtstream.window.results import IngestResult, WindowValue
from crdtstream.window.snapshot import read_snapshot, write_snapshot
from crdtstream.window.store import WindowStore

__all__ = ["Node"]

SNAPSHOT_FILE = "store.snapshot"
RAFT_DIRECTORY = "raft"
IDEMPOTENCY_KEYS_MAX = 4_096
"""Idempotency keys of strong writes a node remembers (the oldest forgotten first). A retry is
deduplicated by the state machine only while its sequence is among the session's last
``session_results_max``; an older one is refused there, never applied twice."""

STRONG_TAGS = frozenset((wire.Tag.RAFT_MESSAGE, wire.Tag.STRONG_REQUEST, wire.Tag.STRONG_RESPONSE))


def _without_future_rows(batch: KindBatch, horizon_ms: int) -> tuple[KindBatch, int]:
    """``batch`` without rows stamped after ``horizon_ms``, and how many were dropped."""
    return _kept_rows(batch, batch.timestamps_ms <= horizon_ms)


def _without_keys(batch: KindBatch, refused: Callable[[str], bool]) -> tuple[KindBatch, int]:
    """``batch`` without the keys ``refused`` names (their rows and names), and how many rows
    were dropped."""
    kept_keys = ~np.fromiter(map(refused, batch.key_names), np.bool_, len(batch.key_names))
    if kept_keys.all():
        return batch, 0
    renumbered = np.cumsum(kept_keys, dtype=np.int64) - 1
    rows = kept_keys[batch.key_index]
    names = [name for name, kept in zip(batch.key_names, kept_keys.tolist(), strict=True) if kept]
    filtered, dropped = _kept_rows(batch, rows)
    return (
        dataclasses.replace(
            filtered,
            key_names=names,
            key_index=renumbered[filtered.key_index],
            key_ids=None if batch.key_ids is None else batch.key_ids[kept_keys],
        ),
        dropped,
    )


def _kept_rows(batch: KindBatch, keep: npt.NDArray[np.bool_]) -> tuple[KindBatch, int]:
    dropped = len(keep) - int(np.count_nonzero(keep))
    if not dropped:
        return batch, 0
    filtered = dataclasses.replace(
        batch,
        key_index=batch.key_index[keep],
        values=batch.values[keep],
        timestamps_ms=batch.timestamps_ms[keep],
        weights=batch.weights[keep],
        relative=batch.relative[keep],
    )
    return filtered, dropped


class Node:
    """One crdtstream node: local writes, gossip until every node agrees, reads with finality."""

    def __init__(
        self,
        config: NodeConfig,
        transport: Transport,
        clock: Clock,
        rng: random.Random,
        *,
        raft_storage: DurableStorage | None = None,
    ) -> None:
        """Open the data directory and start; ``raft_storage`` overrides the on-disk log
        (simulations pass a :class:`CrashableStorage`)."""
        self.config = config
        self.transport = transport
        self.clock = clock
        self.identity: Identity = load_identity(config.data_dir, config.node_id, rng)
        self.store = self._open_store()
        # Its own memory of keys: a known key costs the parser no string work.
        self.statsd = StatsdParser()
        self.policy = Policy(config.policy)
        self.catalog = Catalog(self.identity.replica, rng)
        self.catalog.set_rules(config.policy)
        self.gossip: GossipCore[StoreDelta] = GossipCore(
            config.node_id,
            config.listen_address,
            self.identity.replica,
            self.store,
            StoreDelta.from_bytes,
            rng=rng,
            gossip=config.gossip,
            membership=config.membership,
            window=config.window,
            seeds=[peer.node_id for peer in config.peers],
            catalog=self.catalog,
            rules_fingerprint=self.policy.fingerprint,
        )
        for kind, keys in self.store.kind_keys.items():
            self.catalog.declare_many(keys, kind)
        for peer in config.peers:
            transport.add_peer(peer.node_id, peer.address)
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "packets_received",
                "packets_malformed",
                "packets_unroutable",
                "frames_sent",
                "frames_oversize",
                "frames_unsendable",
                "peers_unusable",
                "events_future_rejected",
                "events_strong_refused",
            ),
            0,
        )
        self.ingest_counts: dict[str, int] = dict.fromkeys(
            (
                "lines_ok",
                "lines_rejected",
                "events_accepted",
                "events_late",
                "events_kind_conflict",
            ),
            0,
        )
        self.ingest_errors: dict[str, int] = {}
        self._known_addresses: dict[str, str] = {p.node_id: p.address for p in config.peers}
        self._unusable_addresses: set[str] = set()
        self.strong: StrongReplica | StrongClient | None = self._open_strong(rng, raft_storage)
        # A fresh client session per run: sequences restart at 1, and a resumed replica id must
        # not make the state machine take new commands for retries of the last run's.
        self.client_id = f"{self.identity.replica}/{rng.getrandbits(32):08x}"
        # Request ids start at random per run: an answer to an earlier run cannot confirm one.
        self.quorum = Quorum(self.store, self._send_raw, first_id=rng.getrandbits(62))
        self._quorum_flush_pending = False
        self._sequence = 0
        self._idempotent: OrderedDict[str, tuple[tuple[object, ...], Command]] = OrderedDict()
        self._raft_ticks_done = 0
        self._started_ms = clock.monotonic_ms()
        self._next_tick_ms = 0
        self._next_snapshot_ms = clock.monotonic_ms() + config.snapshot_interval_ms
        self._closed = False

    # ------------------------------------------------------------------ writes and reads

    def add(
        self,
        key: str,
        kind: str,
        value: float | str | bytes | int,
        *,
        timestamp_ms: int | None = None,
        weight: float = 1.0,
        relative: bool = False,
    ) -> IngestResult:
        """One local write; without ``timestamp_ms`` the event time is the clock's now."""
        stamp = self._checked_time(timestamp_ms)
        self._declare(kind, [key])
        return self.store.add(key, kind, value, stamp, weight=weight, relative=relative)

    def _declare(self, kind: str, key_names: Sequence[str]) -> None:
        """Put keys this node has not seen before into the replicated key catalog."""
        unknown = self.store.keys.unknown(key_names)
        if unknown:
            self.catalog.declare_many(unknown, kind)

    def _future_horizon_ms(self) -> int:
        return self.clock.now_ms() + self.config.event_time_future_ms_max

    def _checked_time(self, timestamp_ms: int | None) -> int:
        """The event time of a write: the clock's now, or ``timestamp_ms`` if not too far ahead.

        One far-future event would move the watermark (or a strong key's replicated watermark)
        past every real window and make all later writes late: refused here, at the edge.
        """
        if timestamp_ms is None:
            return self.clock.now_ms()
        if timestamp_ms > self._future_horizon_ms():
            raise ValueError(
                f"timestamp_ms {timestamp_ms} is more than "
                f"{self.config.event_time_future_ms_max} ms ahead of this node's clock"
            )
        return timestamp_ms

    def remove(self, key: str, item: str | bytes) -> bool:
        """Remove ``item`` from the add-wins set ``key`` (observed adds only); see the store."""
        return self.store.remove(key, item, self.clock.now_ms())

    def kind_of(self, key: str) -> str | None:
        """The kind of ``key``, or None when this node has never seen it."""
        return self.store.kind_of(key)

    def ingest_statsd(self, data: bytes | Sequence[bytes]) -> dict[str, object]:
        """Parse statsd/DogStatsD datagrams and apply them; returns what was accepted/rejected."""
        parsed = self.statsd.parse(data, self.clock.now_ms())
        counts = self.ingest_counts
        counts["lines_ok"] += parsed.lines_ok
        counts["lines_rejected"] += parsed.lines_rejected
        for reason, count in parsed.errors.items():
            self.ingest_errors[reason] = self.ingest_errors.get(reason, 0) + count
        accepted = late = conflicts = future = strong = 0
        horizon_ms = self._future_horizon_ms()
        # A strong key's writes must be acknowledged after Raft commit, which fire-and-forget
        # statsd cannot carry: its lines are refused and counted, never applied where strong
        # reads would not see them.
        strong_rules = any(rule.mode == "strong" for rule in self.policy.rules)
        for kind, parsed_batch in parsed.batches.items():
            batch, dropped = _without_future_rows(parsed_batch, horizon_ms)
            future += dropped
            if strong_rules:
                batch, dropped = _without_keys(batch, self._is_strong)
                strong += dropped
            self._declare(kind, batch.key_names)
            result = self.store.ingest_batch(kind, batch)
            accepted += result.accepted
            late += result.late
            conflicts += result.rejected
        counts["events_accepted"] += accepted
        counts["events_late"] += late
        counts["events_kind_conflict"] += conflicts
        self.counters["events_future_rejected"] += future
        self.counters["events_strong_refused"] += strong
        return {
            "accepted": accepted,
            "rejected": parsed.lines_rejected,
            "late": late,
            "kind_conflicts": conflicts,
            "future_rejected": future,
            "strong_refused": strong,
            "errors": dict(parsed.errors),
        }

    def peers_behind(self) -> list[str]:
        """Live gossip neighbours that have not acknowledged every local change yet: a stopping
        agent pumps until there are none (or a deadline), so its last deltas are not lost."""
        anti_entropy = self.gossip.anti_entropy
        sequence = anti_entropy.sequence
        neighbours = anti_entropy.neighbours(self.gossip.membership.live_peers())
        behind = []
        for peer in neighbours:
            acknowledged = anti_entropy.acknowledged(peer)
            if sequence and (acknowledged is None or acknowledged < sequence):
                behind.append(peer)
        return behind

    def _is_strong(self, key: str) -> bool:
        return self.policy.mode_of(key) == "strong"

    def status(self) -> dict[str, object]:
        """Members, gossip, transport and ingest counters, as plain data for status pages."""
        members = {
            node_id: {"status": m.status, "incarnation": m.incarnation, "address": m.address}
            for node_id, m in self.gossip.membership.members.items()
        }
        return {
            "node_id": self.config.node_id,
            "replica": self.identity.replica,
            "watermark_ms": self.store.watermark_ms,
            "members": members,
            "gossip": dict(self.gossip.stats),
            "transport": self.transport.stats().as_dict(),
            "node": dict(self.counters),
            "ingest": dict(self.ingest_counts),
            "ingest_errors": dict(self.ingest_errors),
            "raft": self._raft_status(),
            "quorum": dict(self.quorum.counters),
            "catalog": {
                "keys": len(self.catalog.keys()),
                "kind_conflicts": self.catalog.conflicts(),
                "rules_fingerprint": self.policy.fingerprint,
            },
        }

    def _raft_status(self) -> dict[str, object] | None:
        if self.strong is None:
            return None
        if isinstance(self.strong, StrongClient):
            return {"role": "client", "voters": self.strong.voters, **self.strong.counters}
        status = self.strong.status()
        return {
            "role": status.role.name.lower(),
            "term": status.term,
            "leader": status.leader,
            "commit": status.commit,
            "applied": status.applied,
            "voters": list(status.voters),
            **self.strong.counters,
        }

    def read_key(self, key: str) -> list[WindowValue]:
        """Every retained window of ``key`` with its value and whether it is final here."""
        return [
            dataclasses.replace(value, final=self.gossip.is_final(value.start_ms, value.end_ms))
            for value in self.store.read_key(key)
        ]

    # ------------------------------------------------------------------ quorum mode

    def quorum_members(self) -> tuple[list[str], int]:
        """The other members a quorum request goes to, and the cluster size its majority is
        counted against: configured peers and every member gossip knows of, except those that
        left (a member believed dead still counts, so a minority never calls itself a
        majority), and at least ``quorum_cluster_size`` when configured."""
        others = {peer.node_id for peer in self.config.peers}
        for node_id, member in self.gossip.membership.members.items():
            if member.status == "left":
                others.discard(node_id)
            else:
                others.add(node_id)
        others.discard(self.config.node_id)
        return sorted(others), max(len(others) + 1, self.config.quorum_cluster_size)

    def add_quorum(
        self,
        key: str,
        kind: str,
        value: float | str | bytes | int,
        done: QuorumDone,
        *,
        timestamp_ms: int | None = None,
        weight: float = 1.0,
        relative: bool = False,
    ) -> IngestResult:
        """:meth:`add`, then replicate the write to a majority; ``done`` runs once a majority
        holds it (``None``) or with :class:`UnavailableError` at the deadline (or at once on a
        node shut down). A write the store did not apply (late, or refused and counted) calls
        ``done(None)`` at once: nothing to send; a value of the wrong type raises, as in
        :meth:`add`."""
        version = self.store.version
        result = self.add(
            key, kind, value, timestamp_ms=timestamp_ms, weight=weight, relative=relative
        )
        self._replicate_since(version, done)
        return result

    def remove_quorum(self, key: str, item: str | bytes, done: QuorumDone) -> bool:
        """:meth:`remove`, replicated to a majority as :meth:`add_quorum` does."""
        version = self.store.version
        removed = self.remove(key, item)
        self._replicate_since(version, done)
        return removed

    def _replicate_since(self, version: int, done: QuorumDone) -> None:
        if self._closed:
            done(UnavailableError("the node is shut down"))
            return
        if self.store.version == version:
            done(None)
            return
        peers, cluster_size = self.quorum_members()
        self.quorum.write(
            version,
            peers,
            cluster_size,
            self.clock.monotonic_ms(),
            self.config.quorum_timeout_ms,
            done,
        )

    def read_quorum(self, key: str, done: QuorumDone) -> None:
        """Merge ``key``'s state from a majority into the store; then :meth:`read_key` sees
        every write a majority acknowledged. ``done`` as for :meth:`add_quorum`."""
        if self._closed:
            done(UnavailableError("the node is shut down"))
            return
        peers, cluster_size = self.quorum_members()
        self.quorum.read(
            key,
            peers,
            cluster_size,
            self.clock.monotonic_ms(),
            self.config.quorum_timeout_ms,
            done,
        )

    async def write_quorum(
        self, key: str, kind: str, value: float | str | bytes | int
    ) -> IngestResult:
        """:meth:`add_quorum` as a coroutine; raises :class:`UnavailableError` when no majority
        confirmed in time (the write stays applied here and still spreads by gossip)."""
        future = self._quorum_future()
        result = self.add_quorum(key, kind, value, _resolver(future))
        self._flush_quorum_soon()
        await future
        return result

    async def delete_quorum(self, key: str, item: str | bytes) -> bool:
        """:meth:`remove_quorum` as a coroutine (errors as :meth:`write_quorum`)."""
        future = self._quorum_future()
        removed = self.remove_quorum(key, item, _resolver(future))
        self._flush_quorum_soon()
        await future
        return removed

    async def query_quorum(self, key: str) -> list[WindowValue]:
        """:meth:`read_quorum`, then :meth:`read_key`; raises :class:`UnavailableError`."""
        future = self._quorum_future()
        self.read_quorum(key, _resolver(future))
        self._flush_quorum_soon()
        await future
        return self.read_key(key)

    @staticmethod
    def _quorum_future() -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()

    def _flush_quorum_soon(self) -> None:
        """Send the quorum requests made during this turn of the event loop once the turn
        ends: coroutines woken together (say, by one batch's answers) send their next requests
        as one batch, without waiting for the next pump."""
        if not self._quorum_flush_pending:
            self._quorum_flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush_quorum)

    def _flush_quorum(self) -> None:
        self._quorum_flush_pending = False
        if not self._closed:
            self.quorum.flush(self.clock.monotonic_ms())

    # ------------------------------------------------------------------ strong mode

    def mode_of(self, key: str) -> str:
        """The consistency mode of ``key`` under this node's policy."""
        return self.policy.mode_of(key)

    def new_command(
        self,
        key: str,
        kind: str,
        operation: str,
        value: float | int | str = 0,
        *,
        limit: float | int | None = None,
        timestamp_ms: int | None = None,
        idempotency_key: str | None = None,
    ) -> Command:
        """A command in this node's client session (a fresh sequence number).

        With ``idempotency_key``, the very command made earlier for that key when there is one:
        a client retrying a write it got no answer for sends the same session and sequence, so
        the state machine applies it at most once and returns its first result. The last
        :data:`IDEMPOTENCY_KEYS_MAX` keys are remembered; a key reused for a different request
        raises :class:`ValueError`.
        """
        request = (key, kind, operation, value, limit, timestamp_ms)
        if idempotency_key is not None:
            known = self._idempotent.get(idempotency_key)
            if known is not None:
                if known[0] != request:
                    raise ValueError(
                        f"idempotency key {idempotency_key!r} was used for another request"
                    )
                self._idempotent.move_to_end(idempotency_key)
                return known[1]
        stamp = self._checked_time(timestamp_ms)
        self._sequence += 1
        command = Command(self.client_id, self._sequence, key, kind, operation, value, stamp, limit)
        if idempotency_key is not None:
            self._idempotent[idempotency_key] = (request, command)
            if len(self._idempotent) > IDEMPOTENCY_KEYS_MAX:
                self._idempotent.popitem(last=False)
        return command

    def _timeout_ticks(self, timeout_ms: int | None) -> int:
        timeout = self.config.strong_timeout_ms if timeout_ms is None else timeout_ms
        return max(1, timeout // self.config.raft.tick_ms)

    def submit_strong(
        self, command: Command, done: Completion, timeout_ms: int | None = None
    ) -> None:
        """Replicate ``command`` through Raft; ``done`` runs after apply or at the deadline."""
        self._require_strong().submit(command, self._timeout_ticks(timeout_ms), done)

    def read_strong(self, key: str, done: Completion, timeout_ms: int | None = None) -> None:
        """A linearizable read of ``key``; ``done`` gets its windows (or None) or an error."""
        self._require_strong().read(key, self._timeout_ticks(timeout_ms), done)

    async def write_strong(self, command: Command, timeout_ms: int | None = None) -> Result:
        """:meth:`submit_strong` as a coroutine; raises :class:`UnavailableError` on timeout."""
        answer = await self._await(lambda done: self.submit_strong(command, done, timeout_ms))
        assert isinstance(answer, Result)
        return answer

    async def query_strong(self, key: str, timeout_ms: int | None = None) -> ReadAnswer:
        """:meth:`read_strong` as a coroutine."""
        answer = await self._await(lambda done: self.read_strong(key, done, timeout_ms))
        assert not isinstance(answer, Result)
        return answer

    async def _await(self, start: Callable[[Completion], None]) -> Result | ReadAnswer:
        future: asyncio.Future[Result | ReadAnswer] = asyncio.get_running_loop().create_future()

        def done(answer: Result | ReadAnswer | None, error: Exception | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(answer)

        start(done)
        return await future

    def _require_strong(self) -> StrongReplica | StrongClient:
        if self.strong is None:
            raise ConfigError("node.raft_voters: strong mode needs at least one Raft voter")
        return self.strong

    def _open_strong(
        self, rng: random.Random, storage: DurableStorage | None
    ) -> StrongReplica | StrongClient | None:
        voters = {peer.node_id: peer.address for peer in self.config.raft_voters}
        if not voters:
            return None
        for node_id, address in voters.items():
            if node_id != self.config.node_id and node_id not in self._known_addresses:
                self._known_addresses[node_id] = address
                self.transport.add_peer(node_id, address)
        if self.config.node_id not in voters:
            return StrongClient(sorted(voters), rng, self._send_raw)
        durable: DurableStorage
        if storage is not None:
            durable = storage
        elif self.config.data_dir is None:
            durable = CrashableStorage(sorted(voters))
        else:
            durable = WalStorage.open(self.config.data_dir / RAFT_DIRECTORY, sorted(voters))
        return StrongReplica(
            self.config.node_id, durable, self.config.raft, self.config.window, rng, self._send_raw
        )

    def _send_raw(self, peer_id: str, payload: bytes) -> None:
        """Send one frame; a peer whose address is unknown yet is reached on a later round.

        A frame over the transport's limit is a bug in whichever core built it: it is counted
        (``frames_oversize``) and dropped, and the node keeps serving.
        """
        if peer_id not in self._known_addresses:
            return
        try:
            self.transport.send(peer_id, payload)
        except PayloadTooLargeError:
            self.counters["frames_oversize"] += 1
            return
        except TransportError:  # the peer was removed, or the transport closed meanwhile
            self.counters["frames_unsendable"] += 1
            return
        self.counters["frames_sent"] += 1

    # ------------------------------------------------------------------ the loop

    def pump(self) -> int:
        """One round without waiting: read what arrived, run due timers, send, snapshot.

        Returns the number of packets handled, so a caller can tell busy from idle.
        """
        now_ms = self.clock.now_ms()
        self.store.advance(now_ms)
        packets = self.transport.receive(self.config.receive_batch_packets)
        for packet in packets:
            self._handle(packet.source_id, packet.payload, now_ms)
        monotonic_ms = self.clock.monotonic_ms()
        if monotonic_ms >= self._next_tick_ms:
            self._next_tick_ms = monotonic_ms + self.config.tick_interval_ms
            self._send(self.gossip.tick(now_ms))
        self._connect_new_members()
        self.quorum.tick(monotonic_ms)
        self.quorum.flush(monotonic_ms)
        if self.strong is not None:
            due = (monotonic_ms - self._started_ms) // self.config.raft.tick_ms
            while self._raft_ticks_done < due:
                self._raft_ticks_done += 1
                self.strong.tick()
            self.strong.process_ready()
        if monotonic_ms >= self._next_snapshot_ms:
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
                wait_ms = max(1, self._next_tick_ms - self.clock.monotonic_ms())
                await self.transport.wait_readable(min(wait_ms, self.config.tick_interval_ms))
        finally:
            self.close()

    def _handle(self, source: str, payload: bytes, now_ms: int) -> None:
        self.counters["packets_received"] += 1
        try:
            tag = wire.peek_tag(payload)
        except DecodeError:
            self.counters["packets_malformed"] += 1
            return
        if tag in GOSSIP_TAGS:
            self._send(self.gossip.step(source, payload, now_ms))
        elif tag in STRONG_TAGS and self.strong is not None:
            self.strong.step(source, payload)
        elif tag in QUORUM_TAGS:
            self.quorum.step(source, payload)
        else:
            self.counters["packets_unroutable"] += 1

    def _send(self, outgoing: Sequence[Outgoing]) -> None:
        for item in outgoing:
            self._send_raw(item.peer_id, item.payload)

    def _connect_new_members(self) -> None:
        for node_id, member in self.gossip.membership.members.items():
            if node_id == self.config.node_id or not member.address:
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
                self.counters["peers_unusable"] += 1
                continue
            self._known_addresses[node_id] = member.address

    # ------------------------------------------------------------------ disk

    def _open_store(self) -> WindowStore:
        path = self._snapshot_path()
        if path is None or not path.exists():
            return WindowStore(self.identity.replica, self.config.window)
        try:
            restored = read_snapshot(path)
        except DecodeError as error:
            raise StorageError(f"{path}: unreadable snapshot: {error}") from error
        if restored.replica == self.identity.replica:
            return restored
        store = WindowStore(self.identity.replica, self.config.window)
        store.merge(restored.full_state())
        return store

    def _snapshot_path(self) -> Path | None:
        data_dir = self.config.data_dir
        return None if data_dir is None else data_dir / SNAPSHOT_FILE

    def snapshot(self) -> None:
        """Write the store to the data directory atomically (nothing without one)."""
        path = self._snapshot_path()
        if path is not None:
            write_snapshot(self.store, path)

    def close(self, *, leave: bool = True) -> None:
        """Leave the cluster (best effort), write a final snapshot, mark a clean shutdown."""
        if self._closed:
            return
        self._closed = True
        try:
            self.quorum.fail_all(UnavailableError("the node is shutting down"))
            if self.strong is not None:
                self.strong.fail_all(UnavailableError("the node is shutting down"))
            if leave and not self.transport.closed:
                self._send(self.gossip.leave(self.clock.now_ms()))
            self.snapshot()
            if self.config.data_dir is not None:
                mark_clean(self.config.data_dir, self.identity)
        finally:
            self.transport.close()


def _resolver(future: asyncio.Future[None]) -> QuorumDone:
    """A :data:`QuorumDone` that settles ``future`` (once)."""

    def done(error: Exception | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    return done
