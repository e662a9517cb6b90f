"""Wire forms of the Raft types: exact round trips, and DecodeError (only) on bad bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtstream import wire
from crdtstream.errors import DecodeError
from crdtstream.raft.types import (
    LOCAL_MESSAGE_TYPES,
    ConfChange,
    ConfChangeKind,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
    decode_conf_change,
    decode_entry,
    decode_hard_state,
    decode_message,
    decode_snapshot,
    encode_conf_change,
    encode_entry,
    encode_hard_state,
    encode_message,
    encode_snapshot,
)

node_ids = st.sampled_from(["n1", "n2", "node-3", "a.b_c"])
counters = st.integers(min_value=0, max_value=2**63 - 1)
entries = st.builds(
    Entry, counters, counters, st.sampled_from(list(EntryKind)), st.binary(max_size=64)
)
snapshots = st.builds(
    Snapshot,
    st.builds(SnapshotMeta, counters, counters, st.lists(node_ids, max_size=5).map(tuple)),
    st.binary(max_size=256),
)
messages = st.builds(
    Message,
    type=st.sampled_from([t for t in MessageType if t not in LOCAL_MESSAGE_TYPES]),
    sender=st.none() | node_ids,
    to=st.none() | node_ids,
    term=counters,
    log_term=counters,
    index=counters,
    entries=st.lists(entries, max_size=5).map(tuple),
    commit=counters,
    reject=st.booleans(),
    reject_hint=counters,
    context=st.binary(max_size=16),
    snapshot=st.none() | snapshots,
)


@given(messages)
def test_message_round_trips(message: Message) -> None:
    assert decode_message(encode_message(message)) == message


@given(entries)
def test_entry_round_trips(entry: Entry) -> None:
    assert decode_entry(encode_entry(entry)) == entry


@given(counters, st.none() | node_ids, counters)
def test_hard_state_round_trips(term: int, vote: str | None, commit: int) -> None:
    state = HardState(term, vote, commit)
    assert decode_hard_state(encode_hard_state(state)) == state


@given(snapshots)
def test_snapshot_round_trips(snapshot: Snapshot) -> None:
    assert decode_snapshot(encode_snapshot(snapshot)) == snapshot


@pytest.mark.parametrize("kind", list(ConfChangeKind))
def test_conf_change_round_trips(kind: ConfChangeKind) -> None:
    change = ConfChange(kind, "n7")
    assert decode_conf_change(encode_conf_change(change)) == change


@given(messages, st.data())
def test_truncated_or_corrupted_message_raises_decode_error_only(
    message: Message, data: st.DataObject
) -> None:
    frame = encode_message(message)
    cut = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
    with pytest.raises(DecodeError):
        decode_message(frame[:cut])
    position = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
    flipped = bytearray(frame)
    flipped[position] ^= data.draw(st.integers(min_value=1, max_value=255))
    try:
        decoded = decode_message(bytes(flipped))
    except DecodeError:
        return
    assert isinstance(decoded, Message)  # a flip may still decode to some valid message


def _frame(body: object, tag: int = wire.Tag.RAFT_MESSAGE) -> bytes:
    return wire.encode(tag, body)


GOOD = [3, "n1", "n2", 1, 0, 0, [], 0, False, 0, b"", None]


@pytest.mark.parametrize(
    ("position", "value"),
    [
        (0, 99),  # unknown message type
        (0, int(MessageType.HUP)),  # a local type never travels
        (1, "bad id with spaces"),
        (2, 7),
        (3, -1),  # negative term
        (3, 1.5),
        (3, True),  # a bool is not a term
        (6, [[1], [1], [0]]),  # entries with a missing column
        (6, [[1], [1], [9], [b""]]),  # unknown entry kind
        (6, [[1], [1, 2], [0], [b""]]),  # columns of different lengths
        (6, [[-1], [1], [0], [b""]]),  # negative term
        (6, [[1], [True], [0], [b""]]),  # a bool is not an index
        (6, [[1], [1], [0], ["text"]]),  # data must be bytes
        (6, "not a list"),
        (8, 1),  # reject must be a boolean
        (10, "text"),  # context must be bytes
        (11, [1, 1, ["n1", None], b""]),  # nil voter in a snapshot
    ],
)
def test_malformed_fields_raise_decode_error(position: int, value: object) -> None:
    body = list(GOOD)
    body[position] = value
    with pytest.raises(DecodeError):
        decode_message(_frame(body))


def test_good_frame_decodes_and_wrong_tag_or_length_is_refused() -> None:
    assert decode_message(_frame(GOOD)).type is MessageType.APP
    with pytest.raises(DecodeError):
        decode_message(_frame(GOOD, tag=wire.Tag.RAFT_ENTRY))
    with pytest.raises(DecodeError):
        decode_message(_frame(GOOD[:-1]))
    with pytest.raises(DecodeError):
        decode_message(b"")


def test_heartbeat_is_small_on_the_wire() -> None:
    heartbeat = Message(MessageType.HEARTBEAT, "n1", "n2", 12, commit=3400, context=b"\0" * 8)
    assert len(encode_message(heartbeat)) < 40
