"""Random and mutated frames of every message type, fed to the handlers that receive them.

A handler must raise nothing for any bytes a peer can send, and must count as malformed exactly
the frames its decoder refuses (plus the few that only its state can refuse: a Raft append
against committed entries, an acknowledgement of a part a request lacks, a Yjs message the
catalog refuses). Decoding decides malformedness, so a crash here is either a gap in a decoder
or a bug in a handler; both must be fixed, not caught.

Mutations start from the sample frames of :mod:`tests.golden.samples`: bytes flipped, cut or
added, and structural edits of the decoded body (a field replaced by a value of another type
or range, removed, duplicated), also inside frames nested in bytes fields (a delta, a command,
a membership change). Every run is seeded; a failure names its seed, frame and mutation.
Replay one seed with ``CRDTSTREAM_FUZZ_SEEDS=<seed>``.
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from crdtstream import wire
from crdtstream.config import MembershipConfig, PolicyRule, RaftConfig, WindowConfig
from crdtstream.engine.bounded_mode import BoundedKeys, decode_bounded
from crdtstream.engine.paxos_mode import PaxosReplica
from crdtstream.engine.quorum import Quorum, decode_quorum
from crdtstream.engine.requests import answers_from, rows_from
from crdtstream.engine.strong import StrongReplica
from crdtstream.engine.strong_client import StrongClient
from crdtstream.engine.tickets import Ticket
from crdtstream.errors import ConfigError, DecodeError
from crdtstream.gossip.catalog import Catalog
from crdtstream.gossip.core import GossipCore
from crdtstream.gossip.messages import DeltaPart, decode_frame
from crdtstream.paxos.storage import MemoryAcceptorStorage
from crdtstream.paxos.types import decode_messages
from crdtstream.raft.rawnode import refusal
from crdtstream.raft.state_machine import StateMachine
from crdtstream.raft.types import decode_message
from crdtstream.window.delta import StoreDelta
from tests.golden import samples
from tests.golden.moved import CrashableStorage

MUTATIONS_PER_FRAME = 300
VOTERS = ["n1", "n2", "n3"]

_ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    -1,
    0,
    1,
    7,
    (1 << 63) - 1,
    -(1 << 63),
    1.5,
    float("nan"),
    "",
    "n1",
    "x" * 40,
    b"",
    b"\x01\x02",
    [],
    [0],
    [[]],
    {},
    {"a": 1},
]


def seeds() -> list[int]:
    """``CRDTSTREAM_FUZZ_SEEDS`` (comma separated), else a fixed set."""
    chosen = os.environ.get("CRDTSTREAM_FUZZ_SEEDS")
    return [int(text) for text in chosen.split(",")] if chosen else [1, 2, 3]


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every element of a plain (msgpack) value, the root included."""
    paths = [path]
    if isinstance(value, list):
        for index, item in enumerate(value):
            paths += _nodes(item, (*path, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            paths += _nodes(item, (*path, key))
    return paths


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def _set(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    _get(value, path[:-1])[path[-1]] = new
    return value


def _mutate_value(value: Any, rng: random.Random, depth: int) -> tuple[Any, str]:
    """One structural edit somewhere in ``value`` (a copy); returns it and a description."""
    value = copy.deepcopy(value)
    path = rng.choice(_nodes(value))
    target = _get(value, path)
    choice = rng.random()
    if isinstance(target, bytes) and depth < 3 and choice < 0.5:
        try:
            tag, inner = wire.decode(target)
        except DecodeError:
            pass
        else:
            mutated, what = _mutate_value(inner, rng, depth + 1)
            return _set(value, path, wire.encode(tag, mutated)), f"inside {path}: {what}"
    if isinstance(target, list) and target and choice < 0.3:
        index = rng.randrange(len(target))
        if rng.random() < 0.5:
            del target[index]
            return value, f"removed {(*path, index)}"
        target.insert(index, copy.deepcopy(target[index]))
        return value, f"duplicated {(*path, index)}"
    if isinstance(target, int) and not isinstance(target, bool) and choice < 0.6:
        new = target + rng.choice([-(1 << 40), -2, -1, 1, 2, 1 << 40])
        new = max(-(1 << 63), min((1 << 63) - 1, new))
        return _set(value, path, new), f"{path}: {target!r} -> {new!r}"
    new = rng.choice(_ODD_VALUES)
    return _set(value, path, copy.deepcopy(new)), f"{path}: -> {new!r}"


def mutate(frame: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A mutated copy of ``frame`` and what was done to it."""
    choice = rng.random()
    if choice < 0.55:
        tag, body = wire.decode(frame)
        mutated, what = _mutate_value(body, rng, 0)
        return wire.encode(tag, mutated), what
    data = bytearray(frame)
    if choice < 0.75:
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(data))
            data[position] = rng.randrange(256)
        return bytes(data), "bytes flipped"
    if choice < 0.85:
        cut = rng.randrange(len(data))
        return bytes(data[:cut]), f"cut at {cut}"
    if choice < 0.95:
        extra = rng.randbytes(rng.randint(1, 8))
        return bytes(data) + extra, "bytes appended"
    return rng.randbytes(rng.randint(0, 40)), "random bytes"


@dataclass
class Handler:
    """Feeds one frame to a receiver: ``refused`` is the decoders' verdict (must be counted),
    ``feed`` delivers it, ``malformed`` reads the receiver's counter, ``settle`` runs its
    timers and output afterwards (where a bad value let through would blow up)."""

    refused: Callable[[bytes], bool]
    feed: Callable[[bytes], None]
    malformed: Callable[[], int]
    settle: Callable[[], None]
    counts_rows: bool = False
    """Strong requests and answers travel in batches; each bad row is counted on its own."""


def _refused_by(decode: Callable[[bytes], object]) -> Callable[[bytes], bool]:
    def refused(payload: bytes) -> bool:
        try:
            decode(payload)
        except DecodeError:
            return True
        return False

    return refused


def gossip_handler(seed: int) -> Handler:
    store = samples.sample_store("n1~2")
    core = GossipCore(
        "n1",
        "memory://n1",
        store.replica,
        store,
        StoreDelta.from_bytes,
        rng=random.Random(seed),
        membership=MembershipConfig(probe_interval_ms=100, probe_timeout_ms=50),
        window=samples.WINDOW,
        seeds=["n2"],
        catalog=Catalog(store.replica, random.Random(seed), interval_ms=100),
        rules_fingerprint="rules-digest",
    )
    now = [samples.BASE_MS]

    def decode(payload: bytes) -> None:
        frame = decode_frame(payload)
        if isinstance(frame.body, DeltaPart):
            StoreDelta.from_bytes(frame.body.data)

    def settle() -> None:
        now[0] += 50
        store.advance(now[0])
        core.tick(now[0])
        core.is_final(samples.BASE_MS, samples.BASE_MS + 1_000)

    return Handler(
        _refused_by(decode),
        lambda payload: _ignore(core.step("n2", payload, now[0])),
        lambda: core.stats.malformed_received,
        settle,
    )


def quorum_handler(seed: int) -> Handler:
    """A writer with a write and a read outstanding (answers from n2 reach real requests),
    which also serves n2's requests."""
    del seed
    store = samples.sample_store("n1~1")
    quorum = Quorum(store, lambda destination, payload: None, 100)
    version = store.version
    store.add("api.hits", "counter", 1.0, samples.BASE_MS + 70)
    quorum.write(version, ["n2", "n3"], 3, 0, 10_000, lambda error: None)
    quorum.read("api.hits", ["n2", "n3"], 3, 0, 10_000, lambda error: None)
    quorum.flush(0)
    now = [0]

    def settle() -> None:
        now[0] += 100
        quorum.tick(now[0])

    return Handler(
        _refused_by(decode_quorum),
        lambda payload: quorum.step("n2", payload),
        lambda: quorum.counters.malformed,
        settle,
    )


def strong_handler(node_id: str, source: str, seed: int) -> Handler:
    replica = StrongReplica(
        node_id,
        CrashableStorage(VOTERS),
        RaftConfig(),
        WindowConfig(),
        random.Random(seed),
        lambda destination, payload: None,
    )

    def refused(payload: bytes) -> bool:
        if wire.peek_tag(payload) == wire.Tag.STRONG_REQUEST:
            return _refused_by(
                lambda data: wire.decode_as(data, wire.Tag.STRONG_REQUEST, rows_from)
            )(payload)
        try:
            message = decode_message(payload)
        except DecodeError:
            return True
        if message.sender != source or refusal(message, node_id) is not None:
            return True
        if message.snapshot is not None and not message.snapshot.is_empty():
            try:
                StateMachine(WindowConfig()).restore(message.snapshot.data)
            except (DecodeError, ConfigError):
                return True
        return False

    def settle() -> None:
        replica.tick()
        replica.process_ready()

    return Handler(
        _guarded(refused),
        lambda payload: replica.step(source, payload),
        lambda: replica.counters.malformed,
        settle,
        counts_rows=True,
    )


def client_handler(seed: int) -> Handler:
    client = StrongClient(VOTERS, random.Random(seed), lambda destination, payload: None)
    for _ in range(3):
        client.read("quota.k", 1_000, lambda answer, error: None)

    def settle() -> None:
        client.tick()
        client.process_ready()

    return Handler(
        _refused_by(lambda data: wire.decode_as(data, wire.Tag.STRONG_RESPONSE, answers_from)),
        lambda payload: client.step("n1", payload),
        lambda: client.counters.malformed,
        settle,
        counts_rows=True,
    )


def paxos_handler(seed: int) -> Handler:
    """Node n2, acceptor and proposer (a read of the sample's key in flight), fed by n1."""
    replica = PaxosReplica(
        "n2",
        VOTERS,
        MemoryAcceptorStorage(),
        WindowConfig(),
        random.Random(seed),
        lambda destination, payload: None,
        monotonic_ms=0,
    )
    replica.read("quota.api", 1_000, lambda answer, error: None)
    now = [0]

    def refused(payload: bytes) -> bool:
        try:
            messages = decode_messages(payload)
        except DecodeError:
            return True
        return messages[0].sender != "n1" or messages[0].to != "n2"

    def settle() -> None:
        now[0] += 10
        replica.tick(now[0])
        replica.process_ready()

    return Handler(
        refused,
        lambda payload: replica.step("n1", payload),
        lambda: replica.counters.malformed,
        settle,
    )


def _guarded(refused: Callable[[bytes], bool]) -> Callable[[bytes], bool]:
    def guarded(payload: bytes) -> bool:
        try:
            return refused(payload)
        except DecodeError:
            return True

    return guarded


def _rows(payload: bytes) -> int:
    body = wire.decode(payload)[1]
    rows = body[1] if wire.peek_tag(payload) == wire.Tag.STRONG_RESPONSE else body
    return max(1, len(rows)) if isinstance(rows, list) else 1


def _ignore(value: object) -> None:
    del value


def bounded_handler(seed: int) -> Handler:
    """n2 with a bounded key of the same rule, and a consumption of its own waiting."""
    core = BoundedKeys(
        "n2",
        "n2~1",
        random.Random(seed),
        lambda destination, payload: None,
        started_ms=0,
        timeout_ms=1_000,
    )
    rule = samples.BOUNDED_RULE

    def rules(key: str) -> PolicyRule | None:
        return rule if key.startswith("quota.") else None

    core.write(Ticket(), "quota.api", rule, "consume", 15, None, samples.BASE_MS, 0)
    now = [0]

    def settle() -> None:
        now[0] += 100
        core.tick(samples.BASE_MS + now[0], now[0], ["n1", "n3"], gossip_round=True)

    return Handler(
        _refused_by(decode_bounded),
        lambda payload: core.step("n1", payload, rules, samples.BASE_MS + now[0], now[0]),
        lambda: core.counters.malformed,
        settle,
    )


def handler_for(name: str, seed: int) -> Handler:
    """The receiver of the sample frame ``name`` (Raft: the node it is addressed to)."""
    if name in samples.BOUNDED_FRAMES:
        return bounded_handler(seed)
    if name in samples.GOSSIP_FRAMES:
        return gossip_handler(seed)
    if name in samples.QUORUM_FRAMES:
        return quorum_handler(seed)
    if name == "strong_response":
        return client_handler(seed)
    if name == "strong_request":
        return strong_handler("n1", "n4", seed)
    if name in samples.PAXOS_FRAMES:
        return paxos_handler(seed)
    message = decode_message(samples.message_frames()[name])
    assert message.sender is not None
    assert message.to is not None
    return strong_handler(message.to, message.sender, seed)


ALL_FRAMES = sorted(samples.message_frames())


@pytest.mark.parametrize("seed", seeds())
@pytest.mark.parametrize("name", ALL_FRAMES)
def test_mutated_frames_raise_nothing_and_refused_ones_are_counted(name: str, seed: int) -> None:
    print(f"fuzz seed {seed}, frame {name}")
    rng = random.Random(f"{seed}/{name}")
    original = samples.message_frames()[name]
    handler = handler_for(name, seed)
    counted = refused_total = 0
    for round_number in range(MUTATIONS_PER_FRAME):
        payload, what = (original, "none") if round_number == 0 else mutate(original, rng)
        where = f"seed={seed} frame={name} round={round_number} mutation={what} "
        where += f"bytes={payload.hex()}"
        refused = handler.refused(payload)
        before = handler.malformed()
        try:
            handler.feed(payload)
            handler.settle()
        except Exception as error:  # the test's point: report which input made it raise
            raise AssertionError(f"{where}: the handler raised {error!r}") from error
        increase = handler.malformed() - before
        if refused:
            assert increase == 1, f"{where}: a refused frame counted {increase} times"
        else:
            most = _rows(payload) if handler.counts_rows else 1
            assert 0 <= increase <= most, f"{where}: one frame counted {increase} times"
        counted += increase
        refused_total += refused
    assert refused_total >= MUTATIONS_PER_FRAME // 5, f"seed={seed} {name}: too few refused"
    assert refused_total < MUTATIONS_PER_FRAME, f"seed={seed} {name}: nothing was accepted"


def test_the_unmutated_samples_are_accepted_and_not_counted() -> None:
    for name in ALL_FRAMES:
        handler = handler_for(name, 0)
        frame = samples.message_frames()[name]
        assert not handler.refused(frame), name
        handler.feed(frame)
        assert handler.malformed() == 0, name
