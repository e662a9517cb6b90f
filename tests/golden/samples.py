"""Deterministic sample inputs: one frame of every message type, a small store and a WAL.

Everything is built from fixed ids, fixed timestamps and fixed seeds, so the bytes are the same
in every run and under every ``PYTHONHASHSEED``. The golden tests pin these bytes; the fuzz
tests mutate the frames. Frames are made by the same encoders the cores use (a real
:class:`Quorum` for the quorum frames, :func:`encode_frame` for gossip frames).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pycrdt

from crdtstream import wire
from crdtstream.config import PolicyRule, WindowConfig
from crdtstream.crdt import (
    BoundedCounter,
    Distribution,
    GCounter,
    GSet,
    HyperLogLog,
    LWWRegister,
    MaxRegister,
    MinRegister,
    ORSet,
    PNCounter,
)
from crdtstream.engine.bounded_mode import BoundedKeys
from crdtstream.engine.quorum import Quorum
from crdtstream.engine.requests import response_row
from crdtstream.engine.tickets import Ticket
from crdtstream.gossip.messages import MemberUpdate, Progress, encode_frame
from crdtstream.paxos.types import AcceptorRecord, encode_messages, encode_record
from crdtstream.paxos.types import Message as PaxosMessage
from crdtstream.paxos.types import MessageType as PaxosType
from crdtstream.raft.commands import Command, Result, encode_command, encode_result
from crdtstream.raft.state_machine import KeyView, StateMachine
from crdtstream.raft.types import (
    ConfChange,
    ConfChangeKind,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
    encode_conf_change,
    encode_entry,
    encode_hard_state,
    encode_message,
    encode_snapshot,
)
from crdtstream.window.store import WindowStore
from tests.golden.moved import store_snapshot, wal

__all__ = [
    "BOUNDED_FRAMES",
    "BOUNDED_RULE",
    "GOSSIP_FRAMES",
    "QUORUM_FRAMES",
    "RAFT_FRAMES",
    "STRONG_FRAMES",
    "WINDOW",
    "message_frames",
    "sample_store",
    "state_frames",
    "store_snapshot_bytes",
    "wal_segment_bytes",
]

WINDOW = WindowConfig(size_ms=1_000, allowed_lateness_ms=5_000, retention_windows=10)
BASE_MS = 1_700_000_000_000
"""A fixed event time (no clock is read anywhere here)."""

GOSSIP_FRAMES = (
    "gossip_delta",
    "gossip_ack",
    "swim_ping",
    "swim_ping_req",
    "swim_ack",
    "swim_nack",
    "swim_sync",
    "swim_sync_reply",
    "catalog_sync",
    "gossip_progress",
)
RAFT_FRAMES = (
    "raft_append",
    "raft_append_response",
    "raft_vote",
    "raft_heartbeat",
    "raft_snapshot",
    "raft_proposal_conf_change",
    "raft_read_index",
)
STRONG_FRAMES = ("strong_request", "strong_response")
QUORUM_FRAMES = ("quorum_write", "quorum_ack", "quorum_read", "quorum_state")
BOUNDED_FRAMES = ("bounded_state", "bounded_request")
BOUNDED_RULE = PolicyRule(
    "quota.*", "bounded", limit=30, window_ms=60_000, members=("n1", "n2", "n3")
)
PAXOS_FRAMES = ("paxos_message",)
PAXOS_VALUE = wire.encode(wire.Tag.RAFT_MACHINE_SNAPSHOT, [])
"""Stands for a key's value (a one-key state machine snapshot): the record holds it opaque."""


def sample_store(replica: str = "n1~1") -> WindowStore:
    """A small store with one key of every kind, written at fixed times."""
    store = WindowStore(replica, WINDOW)
    store.add("api.hits", "counter", 3.0, BASE_MS)
    store.add("api.hits", "counter", 2.0, BASE_MS + 1_000)
    store.add("cpu.load", "gauge", 0.5, BASE_MS + 10)
    store.add("users.seen", "set", "alice", BASE_MS + 20)
    store.add("users.distinct", "distinct", "bob", BASE_MS + 30)
    store.add("latency.ms", "distribution", 12.5, BASE_MS + 40)
    store.add("queue.max", "max", 7.0, BASE_MS + 50)
    store.add("queue.min", "min", -2.0, BASE_MS + 60)
    return store


def store_snapshot_bytes() -> bytes:
    """The snapshot of :func:`sample_store`."""
    return store_snapshot.snapshot(sample_store())


def wal_segment_bytes(directory: Path) -> bytes:
    """The first segment of a log with three entries (one of each kind) and a hard state."""
    storage = wal.WalStorage.open(directory, ["n1", "n2", "n3"], sync_file=_no_fsync)
    try:
        command = encode_command(Command("client", 1, "quota.k", "counter", "add", 1))
        change = encode_conf_change(ConfChange(ConfChangeKind.REMOVE_VOTER, "n3"))
        storage.append(
            [
                Entry(1, 1, EntryKind.EMPTY),
                Entry(1, 2, EntryKind.NORMAL, command),
                Entry(2, 3, EntryKind.CONF_CHANGE, change),
            ]
        )
        storage.set_hard_state(HardState(2, "n1", 2))
        storage.sync()
        [name] = storage.segment_names()
    finally:
        storage.close()
    return (directory / name).read_bytes()


def _no_fsync(descriptor: int) -> None:
    del descriptor


def _gossip_frames() -> dict[str, bytes]:
    update = MemberUpdate("n2", "memory://n2", 3, "suspect", "n2~1", "n1")
    progress = Progress("n1~1", BASE_MS, {BASE_MS - 1_000: 4, BASE_MS: 2})
    delta = sample_store().full_state().to_bytes()
    rows = [MemberUpdate("n1", "memory://n1", 0, "alive", "n1~1", "n1").to_wire(), update.to_wire()]
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=42)
    doc.get("claims", type=pycrdt.Map)["api.hits\x1fcounter\x1fn1~1"] = True
    bodies: dict[str, tuple[int, Any]] = {
        "gossip_delta": (wire.Tag.GOSSIP_DELTA, [12345, 0, 0, 1, delta]),
        "gossip_ack": (wire.Tag.GOSSIP_ACK, [12345, 67890, 0, [0]]),
        "swim_ping": (wire.Tag.SWIM_PING, [7, "n2"]),
        "swim_ping_req": (wire.Tag.SWIM_PING_REQ, [8, "n3"]),
        "swim_ack": (wire.Tag.SWIM_ACK, [7, "n2"]),
        "swim_nack": (wire.Tag.SWIM_NACK, [8]),
        "swim_sync": (wire.Tag.SWIM_SYNC, [rows, "rules-digest"]),
        "swim_sync_reply": (wire.Tag.SWIM_SYNC_REPLY, [rows[:1], "rules-digest"]),
        "catalog_sync": (wire.Tag.CATALOG_SYNC, [1, pycrdt.create_sync_message(doc)]),
        "gossip_progress": (wire.Tag.GOSSIP_PROGRESS, []),
    }
    return {
        name: encode_frame(tag, body, [update], [progress]) for name, (tag, body) in bodies.items()
    }


def _raft_frames() -> dict[str, bytes]:
    command = encode_command(Command("client", 1, "quota.k", "counter", "add", 1))
    change = encode_conf_change(ConfChange(ConfChangeKind.ADD_VOTER, "n3"))
    entries = (Entry(2, 5, EntryKind.NORMAL, command), Entry(2, 6, EntryKind.EMPTY))
    image = StateMachine(WindowConfig()).snapshot()
    snapshot = Snapshot(SnapshotMeta(9, 2, ("n1", "n2", "n3")), image)
    messages = {
        "raft_append": Message(
            MessageType.APP, "n1", "n2", 2, log_term=1, index=4, entries=entries, commit=4
        ),
        "raft_append_response": Message(
            MessageType.APP_RESP, "n2", "n1", 2, index=6, reject=True, reject_hint=3, log_term=1
        ),
        "raft_vote": Message(MessageType.VOTE, "n3", "n1", 3, log_term=2, index=6),
        "raft_heartbeat": Message(
            MessageType.HEARTBEAT, "n1", "n2", 2, commit=5, context=b"\x00\x07"
        ),
        "raft_snapshot": Message(MessageType.SNAP, "n1", "n3", 2, snapshot=snapshot),
        "raft_proposal_conf_change": Message(
            MessageType.PROP, "n2", "n1", 0, entries=(Entry(0, 0, EntryKind.CONF_CHANGE, change),)
        ),
        "raft_read_index": Message(MessageType.READ_INDEX, "n2", "n1", 0, context=b"n2/0"),
    }
    return {name: encode_message(message) for name, message in messages.items()}


def _strong_frames() -> dict[str, bytes]:
    command = encode_command(
        Command("client", 4, "quota.k", "counter", "conditional_add", 2, 0, 10)
    )
    request = [[11, command, None, 50], [12, None, "quota.k", 50]]
    view = KeyView("counter", ((BASE_MS, BASE_MS + 1_000, 6),))
    rows = [
        response_row(11, Result(True, True, 6, ""), None),
        response_row(12, view, None),
        response_row(13, None, None),
    ]
    return {
        "strong_request": wire.encode(wire.Tag.STRONG_REQUEST, request),
        "strong_response": wire.encode(wire.Tag.STRONG_RESPONSE, ["n1", rows]),
    }


def _quorum_frames() -> dict[str, bytes]:
    sent: dict[int, bytes] = {}

    def keep(destination: str, payload: bytes) -> None:
        del destination
        sent.setdefault(wire.peek_tag(payload), payload)

    writer, member = sample_store("n1~1"), sample_store("n2~1")
    writer_quorum, member_quorum = Quorum(writer, keep, 100), Quorum(member, keep, 200)
    version = writer.version
    writer.add("api.hits", "counter", 1.0, BASE_MS + 70)
    writer_quorum.write(version, ["n2", "n3"], 3, 0, 1_000, lambda error: None)
    writer_quorum.read("api.hits", ["n2", "n3"], 3, 0, 1_000, lambda error: None)
    writer_quorum.flush(0)
    member_quorum.step("n1", sent[wire.Tag.QUORUM_WRITE])
    member_quorum.step("n1", sent[wire.Tag.QUORUM_READ])
    return {
        "quorum_write": sent[wire.Tag.QUORUM_WRITE],
        "quorum_ack": sent[wire.Tag.QUORUM_ACK],
        "quorum_read": sent[wire.Tag.QUORUM_READ],
        "quorum_state": sent[wire.Tag.QUORUM_STATE],
    }


def _bounded_frames() -> dict[str, bytes]:
    """n1 asks for more than its share of a bounded key: its request and its state."""
    sent: dict[int, bytes] = {}

    def keep(destination: str, payload: bytes) -> None:
        del destination
        sent.setdefault(wire.peek_tag(payload), payload)

    core = BoundedKeys("n1", "n1~1", random.Random(1), keep, started_ms=0, timeout_ms=1_000)
    core.tick(BASE_MS, 0, ["n2"], gossip_round=True)
    core.write(Ticket(), "quota.api", BOUNDED_RULE, "consume", 12, None, BASE_MS, 0)
    core.tick(BASE_MS, 0, ["n2"], gossip_round=True)
    return {
        "bounded_state": sent[wire.Tag.BOUNDED_STATE],
        "bounded_request": sent[wire.Tag.BOUNDED_REQUEST],
    }


def message_frames() -> dict[str, bytes]:
    """One frame of every message type that travels between nodes, by name."""
    frames = {
        **_gossip_frames(),
        **_raft_frames(),
        **_strong_frames(),
        **_quorum_frames(),
        **_bounded_frames(),
    }
    frames["paxos_message"] = encode_messages(
        [
            PaxosMessage(PaxosType.PREPARE, "n1", "n2", "quota.api", (3, "n1#00000000aa")),
            PaxosMessage(
                PaxosType.ACCEPT,
                "n1",
                "n2",
                "quota.api",
                (3, "n1#00000000aa"),
                (4, "n1#00000000aa"),
                PAXOS_VALUE,
            ),
        ]
    )
    assert set(frames) == {
        *GOSSIP_FRAMES,
        *RAFT_FRAMES,
        *STRONG_FRAMES,
        *QUORUM_FRAMES,
        *BOUNDED_FRAMES,
        *PAXOS_FRAMES,
    }
    return frames


def state_frames() -> dict[str, bytes]:
    """One frame of every state type kept on disk or inside other frames, by name."""
    g_set, or_set = GSet("n1~1"), ORSet("n1~1")
    g_set.add("a")
    or_set.add("a")
    or_set.add("b")
    or_set.remove("a")
    store = sample_store()
    entry = Entry(3, 7, EntryKind.NORMAL, b"data")
    snapshot = Snapshot(SnapshotMeta(9, 2, ("n1", "n2")), b"image")
    bounded = BoundedCounter("n1~1")
    bounded.grant(10)
    bounded.consume(3)
    bounded.transfer(4, "n2~1")
    return {
        "bounded_counter": bounded.to_bytes(),
        "g_counter": GCounter("n1~1").add(5).to_bytes(),
        "pn_counter": PNCounter("n1~1").add(5).add(-7).to_bytes(),
        "g_set": g_set.to_bytes(),
        "or_set": or_set.to_bytes(),
        "lww_register": LWWRegister("n1~1").set("on", BASE_MS).to_bytes(),
        "max_register": MaxRegister("n1~1").observe(4.5).to_bytes(),
        "min_register": MinRegister("n1~1").observe(-1.5).to_bytes(),
        "hyper_log_log": HyperLogLog("n1~1", precision=4).add("x").add("y").to_bytes(),
        "distribution": Distribution("n1~1").add(1.0).add(250.0, count=3).to_bytes(),
        "window_delta": store.full_state().to_bytes(),
        "raft_entry": encode_entry(entry),
        "raft_hard_state": encode_hard_state(HardState(4, "n2", 3)),
        "raft_snapshot": encode_snapshot(snapshot),
        "raft_conf_change": encode_conf_change(ConfChange(ConfChangeKind.ADD_VOTER, "n4")),
        "raft_machine_command": encode_command(
            Command("client", 2, "users.seen", "set", "add", "carol", BASE_MS)
        ),
        "raft_machine_result": encode_result(Result(True, False, 3, "")),
        "paxos_acceptor_record": encode_record(
            "quota.api", AcceptorRecord((5, "n2#00000000bb"), (4, "n1#00000000aa"), PAXOS_VALUE)
        ),
    }
