"""The acceptor's file: what was synced survives a reopen, a torn tail is cut, compaction keeps
the newest record of every key."""

from __future__ import annotations

from pathlib import Path

import pytest

from crdtstream import wire
from crdtstream.paxos.types import AcceptorRecord
from crdtstream.storage import paxos_acceptors
from crdtstream.storage.paxos_acceptors import AcceptorFile


def record(counter: int, value: bytes = b"") -> AcceptorRecord:
    """A record whose value (when any) is shaped as a key's value is: a tagged frame."""
    frame = wire.encode(wire.Tag.RAFT_MACHINE_SNAPSHOT, value) if value else b""
    return AcceptorRecord((counter, "p#1"), (counter, "p#1") if value else (0, ""), frame)


def test_synced_records_survive_a_reopen_and_the_last_of_a_key_wins(tmp_path: Path) -> None:
    syncs: list[int] = []
    store = AcceptorFile(tmp_path, sync_file=syncs.append)
    store.save({"a": record(1), "b": record(2, b"x")})
    store.save({"a": record(3, b"y")})
    store.sync()
    store.close()
    reopened = AcceptorFile(tmp_path)
    assert dict(reopened.load()) == {"a": record(3, b"y"), "b": record(2, b"x")}
    assert store.sync_count == 1
    assert syncs  # the file (and its directory) were fsynced
    reopened.close()


def test_a_torn_last_append_is_cut_and_earlier_records_kept(tmp_path: Path) -> None:
    store = AcceptorFile(tmp_path)
    store.save({"a": record(1, b"v")})
    store.sync()
    store.close()
    path = tmp_path / paxos_acceptors.ACCEPTORS_FILE
    whole = path.read_bytes()
    path.write_bytes(whole + whole[: len(whole) // 2])  # a second append, torn halfway
    reopened = AcceptorFile(tmp_path)
    assert dict(reopened.load()) == {"a": record(1, b"v")}
    assert reopened.torn_bytes_cut == len(whole) // 2
    assert path.stat().st_size == len(whole)
    reopened.close()


def test_a_flipped_byte_ends_the_replay_there(tmp_path: Path) -> None:
    store = AcceptorFile(tmp_path)
    store.save({"a": record(1, b"v")})
    store.save({"b": record(2, b"w")})
    store.sync()
    store.close()
    path = tmp_path / paxos_acceptors.ACCEPTORS_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    reopened = AcceptorFile(tmp_path)
    assert dict(reopened.load()) == {"a": record(1, b"v")}
    reopened.close()


def test_compaction_rewrites_one_record_per_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paxos_acceptors, "COMPACT_BYTES_MIN", 1000)
    store = AcceptorFile(tmp_path)
    for counter in range(1, 200):
        store.save({"a": record(counter, b"v" * 10), "b": record(counter)})
        store.sync()
    size = (tmp_path / paxos_acceptors.ACCEPTORS_FILE).stat().st_size
    assert size < 1000 * paxos_acceptors.COMPACT_RATIO
    store.close()
    reopened = AcceptorFile(tmp_path)
    assert dict(reopened.load()) == {"a": record(199, b"v" * 10), "b": record(199)}
    reopened.close()
