"""Golden bytes: the wire tag numbers, one frame of every message and state type, a store
snapshot and a WAL segment are pinned, so that a format change is a deliberate, visible edit.

After a deliberate change, rewrite the fixtures with ``CRDTSTREAM_REWRITE_GOLDEN=1 python -m
pytest tests/golden`` and commit them with the change (and, where old bytes must still be read,
a reader for the previous version). The inputs are fixed (ids, timestamps, seeds), so the bytes
do not depend on the run or on ``PYTHONHASHSEED``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from crdtstream import wire
from crdtstream.engine.quorum import decode_quorum
from crdtstream.gossip.messages import STATUS_CODES, decode_frame, encode_frame
from crdtstream.paxos.types import decode_messages, encode_messages
from crdtstream.raft.types import (
    ConfChangeKind,
    Entry,
    EntryKind,
    HardState,
    MessageType,
    decode_message,
    encode_message,
)
from tests.golden import samples
from tests.golden.moved import store_snapshot, wal

DATA = Path(__file__).parent / "data"
REWRITE = os.environ.get("CRDTSTREAM_REWRITE_GOLDEN") == "1"

WIRE_TAGS = {
    "G_COUNTER": 1,
    "PN_COUNTER": 2,
    "G_SET": 3,
    "OR_SET": 4,
    "LWW_REGISTER": 5,
    "MAX_REGISTER": 6,
    "MIN_REGISTER": 7,
    "HYPER_LOG_LOG": 8,
    "DISTRIBUTION": 9,
    "BOUNDED_COUNTER": 10,
    "WINDOW_DELTA": 32,
    "WINDOW_SNAPSHOT": 33,
    "GOSSIP_DELTA": 64,
    "GOSSIP_ACK": 65,
    "SWIM_PING": 66,
    "SWIM_PING_REQ": 67,
    "SWIM_ACK": 68,
    "SWIM_NACK": 69,
    "SWIM_SYNC": 70,
    "SWIM_SYNC_REPLY": 71,
    "CATALOG_SYNC": 72,
    "SLOT_COUNTERS": 73,
    "GOSSIP_PROGRESS": 74,
    "RAFT_MESSAGE": 96,
    "RAFT_ENTRY": 97,
    "RAFT_HARD_STATE": 98,
    "RAFT_SNAPSHOT": 99,
    "RAFT_CONF_CHANGE": 100,
    "RAFT_WAL_SNAPSHOT_MARK": 112,
    "RAFT_WAL_METADATA": 113,
    "RAFT_MACHINE_COMMAND": 114,
    "RAFT_MACHINE_RESULT": 115,
    "RAFT_MACHINE_SNAPSHOT": 116,
    "NODE_IDENTITY": 128,
    "STRONG_REQUEST": 129,
    "STRONG_RESPONSE": 130,
    "QUORUM_WRITE": 131,
    "QUORUM_ACK": 132,
    "QUORUM_READ": 133,
    "QUORUM_STATE": 134,
    "PAXOS_MESSAGE": 120,
    "PAXOS_ACCEPTOR_RECORD": 121,
    "BOUNDED_STATE": 150,
    "BOUNDED_REQUEST": 151,
    "BOUNDED_RETIREMENT": 152,
    "BOUNDED_ROWS_ASK": 153,
    "BOUNDED_ROWS": 154,
}
"""The tag table as released. ONLY APPEND: a new tag is added here too; a changed or removed
number breaks every stored file and every older peer, and must fail this test."""

RAFT_MESSAGE_TYPES = {
    "HUP": 0,
    "BEAT": 1,
    "PROP": 2,
    "APP": 3,
    "APP_RESP": 4,
    "VOTE": 5,
    "VOTE_RESP": 6,
    "SNAP": 7,
    "HEARTBEAT": 8,
    "HEARTBEAT_RESP": 9,
    "UNREACHABLE": 10,
    "SNAPSHOT_STATUS": 11,
    "CHECK_QUORUM": 12,
    "TRANSFER_LEADER": 13,
    "TIMEOUT_NOW": 14,
    "READ_INDEX": 15,
    "READ_INDEX_RESP": 16,
    "PRE_VOTE": 17,
    "PRE_VOTE_RESP": 18,
}


def _pinned(released: dict[str, int], current: dict[str, int]) -> None:
    """Every released name keeps its number; new names only take numbers never used."""
    changed = {name: (number, current.get(name)) for name, number in released.items()}
    changed = {name: pair for name, pair in changed.items() if pair[0] != pair[1]}
    assert not changed, f"renumbered or removed (released, now): {changed}"
    added = {name: number for name, number in current.items() if name not in released}
    assert not added, f"new entries {added}: append them to the pinned table of this test"


def test_wire_tag_numbers_are_only_ever_appended() -> None:
    _pinned(WIRE_TAGS, {tag.name: int(tag) for tag in wire.Tag})


def test_raft_enum_numbers_are_only_ever_appended() -> None:
    _pinned(RAFT_MESSAGE_TYPES, {kind.name: int(kind) for kind in MessageType})
    _pinned({"NORMAL": 0, "CONF_CHANGE": 1, "EMPTY": 2}, {k.name: int(k) for k in EntryKind})
    _pinned({"ADD_VOTER": 0, "REMOVE_VOTER": 1}, {k.name: int(k) for k in ConfChangeKind})
    assert STATUS_CODES == ("alive", "suspect", "dead", "left", "removed"), (
        "member status codes moved"
    )


def _check_hex(name: str, actual: dict[str, bytes]) -> None:
    """Compare ``actual`` with ``data/<name>.json`` (name -> hex), or rewrite it."""
    path = DATA / f"{name}.json"
    rendered = {key: actual[key].hex() for key in sorted(actual)}
    if REWRITE:
        path.write_text(json.dumps(rendered, indent=1) + "\n")
    golden = json.loads(path.read_text())
    assert sorted(golden) == sorted(rendered), f"{path}: the set of samples changed"
    changed = sorted(key for key in rendered if golden[key] != rendered[key])
    assert not changed, (
        f"{path}: bytes changed for {changed}; if deliberate, rewrite with "
        "CRDTSTREAM_REWRITE_GOLDEN=1 and keep a reader for the old format"
    )


def test_one_frame_of_every_message_type_is_byte_for_byte_unchanged() -> None:
    _check_hex("message_frames", samples.message_frames())


def test_one_frame_of_every_state_type_is_byte_for_byte_unchanged() -> None:
    _check_hex("state_frames", samples.state_frames())


def test_the_store_snapshot_is_byte_for_byte_unchanged() -> None:
    _check_hex("store_snapshot", {"snapshot": samples.store_snapshot_bytes()})


def test_the_wal_segment_is_byte_for_byte_unchanged(tmp_path: Path) -> None:
    _check_hex("wal_segment", {"segment": samples.wal_segment_bytes(tmp_path / "log")})


def _golden(name: str) -> dict[str, bytes]:
    return {key: bytes.fromhex(text) for key, text in json.loads((DATA / name).read_text()).items()}


def test_the_golden_frames_still_decode_and_reencode_to_themselves() -> None:
    """The readers of today read the pinned bytes (a reader dropped for an old format fails)."""
    frames = _golden("message_frames.json")
    for name in samples.GOSSIP_FRAMES:
        frame = decode_frame(frames[name])
        assert frame.tag == wire.peek_tag(frames[name])
        plain = wire.decode(frames[name])[1]
        assert encode_frame(frame.tag, plain[2], frame.updates, frame.progress) == frames[name]
    for name in samples.RAFT_FRAMES:
        assert encode_message(decode_message(frames[name])) == frames[name], name
    for name in samples.QUORUM_FRAMES:
        decode_quorum(frames[name])
    for name in samples.PAXOS_FRAMES:
        assert encode_messages(decode_messages(frames[name])) == frames[name], name


def test_the_golden_store_snapshot_restores_to_the_sample_store() -> None:
    data = _golden("store_snapshot.json")["snapshot"]
    restored = store_snapshot.restore(data)
    assert store_snapshot.snapshot(restored) == data
    assert restored.read_key("api.hits") == samples.sample_store().read_key("api.hits")


def test_the_golden_wal_segment_replays(tmp_path: Path) -> None:
    segment = _golden("wal_segment.json")["segment"]
    directory = tmp_path / "log"
    samples.wal_segment_bytes(directory)  # the file layout (name, metadata) of today
    [name] = [path for path in directory.iterdir() if path.suffix == ".wal"]
    name.write_bytes(segment)
    storage = wal.WalStorage.open(directory, ["n1", "n2", "n3"])
    try:
        assert storage.initial_state()[0] == HardState(2, "n1", 2)
        entries = storage.entries(1, 4)
        assert [(e.term, e.index, e.kind) for e in entries] == [
            (1, 1, EntryKind.EMPTY),
            (1, 2, EntryKind.NORMAL),
            (2, 3, EntryKind.CONF_CHANGE),
        ]
        assert isinstance(entries[0], Entry)
    finally:
        storage.close()
