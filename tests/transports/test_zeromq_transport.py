"""ZeroMQ-only behaviour: CurveZMQ keeps strangers out, key files, addresses, hostile frames.

Everything runs on 127.0.0.1 (or an ipc path in a temporary directory) with system-chosen
ports; every endpoint is closed by the ``opened`` fixture even when a test fails.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq  # only to play a foreign, non-crdtstream client
from transport_harness import ZmqHarness, collect, curve_keys_for

from crdtstream.config import TransportConfig
from crdtstream.errors import ConfigError, PeerUnknownError, TransportError
from crdtstream.transport import Packet
from transports.zeromq import (
    PROTOCOL_VERSION,
    SEPARATE_FRAME_BYTES,
    CurveKeys,
    ZmqTransport,
    curve_keys_from_config,
    generate_curve_keypair,
    generate_key_pair,
    load_key_pair,
    load_public_keys,
)

LOOPBACK = "tcp://127.0.0.1:0"


@pytest.fixture
def opened() -> Iterator[list[ZmqTransport]]:
    """Endpoints a test appends here are closed afterwards, whatever happened."""
    endpoints: list[ZmqTransport] = []
    try:
        yield endpoints
    finally:
        for endpoint in endpoints:
            endpoint.close()


def wait_for(condition: Callable[[], bool]) -> bool:
    return ZmqHarness().wait_until(condition)


def stay_false_for(condition: Callable[[], bool], seconds: float) -> bool:
    """True when ``condition`` stayed false for ``seconds`` (a bounded negative check)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return False
        time.sleep(0.01)
    return True


def test_curve_lets_allowed_peers_talk(opened: list[ZmqTransport]) -> None:
    keys = curve_keys_for(("a", "b"))
    a = ZmqTransport("a", LOOPBACK, curve=keys["a"])
    b = ZmqTransport("b", LOOPBACK, curve=keys["b"])
    opened += [a, b]
    a.add_peer("b", b.listen_address)
    assert a.send("b", b"sealed")
    harness = ZmqHarness()
    assert [(p.source_id, p.payload) for p in collect(harness, b, 1)] == [("a", b"sealed")]


def test_a_stranger_cannot_deliver_and_is_counted(opened: list[ZmqTransport]) -> None:
    keys = curve_keys_for(("a", "b"))
    b = ZmqTransport("b", LOOPBACK, curve=keys["b"])
    stranger_public, stranger_secret = generate_curve_keypair()
    # The stranger knows b's public key (public keys are public) but is not on b's list.
    stranger = ZmqTransport(
        "stranger",
        LOOPBACK,
        curve=CurveKeys(stranger_public, stranger_secret, {"b": keys["b"].public_key}),
    )
    opened += [b, stranger]
    stranger.add_peer("b", b.listen_address)
    for _ in range(5):
        stranger.send("b", b"let me in")
    assert wait_for(lambda: b.stats().rejected_unauthenticated > 0)
    assert stay_false_for(lambda: bool(b.receive(10)), seconds=0.3)
    assert b.stats().received == 0


def test_no_data_goes_to_a_peer_without_a_known_key(opened: list[ZmqTransport]) -> None:
    keys = curve_keys_for(("a", "b"))
    a = ZmqTransport("a", LOOPBACK, curve=keys["a"])
    opened.append(a)
    with pytest.raises(PeerUnknownError, match="no public key"):
        a.add_peer("stranger", "tcp://127.0.0.1:1")
    assert a.stats().rejected_unauthenticated == 1


def test_an_impostor_at_a_peers_address_receives_nothing(opened: list[ZmqTransport]) -> None:
    keys = curve_keys_for(("a", "b"))
    impostor_public, impostor_secret = generate_curve_keypair()
    # The impostor would gladly accept a, but cannot prove it holds b's secret key.
    impostor = ZmqTransport(
        "b", LOOPBACK, curve=CurveKeys(impostor_public, impostor_secret, dict(keys["a"].allowed))
    )
    a = ZmqTransport("a", LOOPBACK, curve=keys["a"])
    opened += [impostor, a]
    a.add_peer("b", impostor.listen_address)
    for _ in range(5):
        a.send("b", b"for b only")
    assert stay_false_for(lambda: bool(impostor.receive(10)), seconds=0.5)


def test_an_allowed_node_cannot_speak_for_another(opened: list[ZmqTransport]) -> None:
    keys = curve_keys_for(("a", "b", "c"))
    b = ZmqTransport("b", LOOPBACK, curve=keys["b"])
    # Node c's key, but the name "a": the header says "a", the handshake proves "c".
    liar = ZmqTransport("a", LOOPBACK, curve=keys["c"])
    opened += [b, liar]
    liar.add_peer("b", b.listen_address)

    def liar_was_caught() -> bool:
        liar.send("b", b"I am a")
        assert b.receive(10) == []
        return b.stats().rejected_unauthenticated > 0

    assert wait_for(liar_was_caught)


def test_keygen_writes_a_private_secret_and_a_loadable_pair(tmp_path: Path) -> None:
    public_path, secret_path = generate_key_pair(tmp_path, "node-1")
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    public_key, secret_key = load_key_pair(secret_path)
    assert len(public_key) == len(secret_key) == 40
    assert load_public_keys(tmp_path) == {"node-1": public_key}
    with pytest.raises(FileExistsError):
        generate_key_pair(tmp_path, "node-1")
    assert public_path.exists()


def test_a_secret_readable_by_others_is_refused(tmp_path: Path) -> None:
    _, secret_path = generate_key_pair(tmp_path, "node-1")
    os.chmod(secret_path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_key_pair(secret_path)


def test_curve_from_config_files_end_to_end(tmp_path: Path, opened: list[ZmqTransport]) -> None:
    keys_dir, secrets = tmp_path / "allowed", tmp_path / "secrets"
    for node_id in ("a", "b"):
        public_path, _ = generate_key_pair(secrets, node_id)
        keys_dir.mkdir(exist_ok=True)
        (keys_dir / public_path.name).write_bytes(public_path.read_bytes())

    def config_for(node_id: str) -> TransportConfig:
        return TransportConfig(
            curve_enabled=True,
            curve_secret_key_path=str(secrets / f"{node_id}.key_secret"),
            curve_public_keys_dir=str(keys_dir),
        )

    a = ZmqTransport("a", LOOPBACK, config_for("a"))
    b = ZmqTransport("b", LOOPBACK, config_for("b"))
    opened += [a, b]
    assert curve_keys_from_config(config_for("a")) is not None
    a.add_peer("b", b.listen_address)
    a.send("b", b"configured")
    assert [p.payload for p in collect(ZmqHarness(), b, 1)] == [b"configured"]


def test_curve_needs_both_key_paths() -> None:
    with pytest.raises(ConfigError, match="curve_secret_key_path"):
        TransportConfig(curve_enabled=True, curve_public_keys_dir="/tmp")


def test_ipc_addresses_work(tmp_path: Path, opened: list[ZmqTransport]) -> None:
    a = ZmqTransport("a", f"ipc://{tmp_path}/a.sock")
    b = ZmqTransport("b", f"ipc://{tmp_path}/b.sock")
    opened += [a, b]
    a.add_peer("b", b.listen_address)
    a.send("b", b"over a unix socket")
    assert [p.payload for p in collect(ZmqHarness(), b, 1)] == [b"over a unix socket"]


def test_unusable_addresses_raise_transport_errors(opened: list[ZmqTransport]) -> None:
    with pytest.raises(TransportError, match="tcp:// or ipc://"):
        ZmqTransport("a", "udp://127.0.0.1:5000")
    a = ZmqTransport("a", LOOPBACK)
    opened.append(a)
    with pytest.raises(TransportError, match="binding"):
        ZmqTransport("b", a.listen_address)  # the port is taken: a zmq error, translated
    with pytest.raises(TransportError, match="tcp:// or ipc://"):
        a.add_peer("b", "memory://b")


def test_a_peer_can_move_to_a_new_address(opened: list[ZmqTransport]) -> None:
    a, b, c = (ZmqTransport(node_id, LOOPBACK) for node_id in "abc")
    opened += [a, b, c]
    a.add_peer("b", b.listen_address)
    a.add_peer("b", c.listen_address)
    a.send("b", b"follow the address")
    assert [p.payload for p in collect(ZmqHarness(), c, 1)] == [b"follow the address"]


def foreign_push(context: zmq.Context[zmq.Socket[bytes]], address: str) -> zmq.Socket[bytes]:
    """A plain PUSH socket that need not follow our framing, as a foreign program would."""
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(address)
    return push


def header(node_id: bytes, version: int = PROTOCOL_VERSION, layout: int = 0) -> bytes:
    return bytes((version, layout, len(node_id))) + node_id


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x01",
        header(b"x", version=PROTOCOL_VERSION + 1) + b"a version we do not speak",
        header(b"x", layout=7) + b"a layout we do not know",
        header(b"not a node id!") + b"a header that names no node",
        bytes((PROTOCOL_VERSION, 0, 40)) + b"the frame ends inside the header",
        bytes((PROTOCOL_VERSION, 0, 3)) + b"\xff\xfe\xfd" + b"not ascii",
        header(b"x", layout=1) + b"a separate-frame header with the payload inline",
        header(b"x", layout=1),  # announces a payload frame that never comes
    ],
)
def test_frames_that_break_the_framing_are_dropped_and_counted(
    frame: bytes, opened: list[ZmqTransport]
) -> None:
    b = ZmqTransport("b", LOOPBACK)
    opened.append(b)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    hostile = foreign_push(context, b.listen_address)
    honest = foreign_push(context, b.listen_address)
    try:
        hostile.send(frame)
        packets: list[Packet] = []

        def hostile_frame_seen() -> bool:
            packets.extend(b.receive(10))
            return b.stats().dropped_malformed > 0

        assert ZmqHarness().wait_until(hostile_frame_seen)
        honest.send(header(b"y") + b"well formed")
        packets += collect(ZmqHarness(), b, 1)
    finally:
        hostile.close(0)
        honest.close(0)
        context.term()
    assert [(p.source_id, p.payload) for p in packets] == [("y", b"well formed")]
    assert b.stats().dropped_malformed == 1


def test_extra_frames_cannot_desynchronise_the_receiver(opened: list[ZmqTransport]) -> None:
    b = ZmqTransport("b", LOOPBACK)
    opened.append(b)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sender = foreign_push(context, b.listen_address)
    try:
        sender.send_multipart([header(b"x") + b"one", b"junk", header(b"x") + b"two"])
        sender.send(header(b"x") + b"three")
        packets = collect(ZmqHarness(), b, 3)
    finally:
        sender.close(0)
        context.term()
    assert [p.payload for p in packets] == [b"one", b"two", b"three"]
    assert b.stats().dropped_malformed == 1


def test_a_large_payload_travels_in_its_own_frame_intact(opened: list[ZmqTransport]) -> None:
    a, b = ZmqTransport("a", LOOPBACK), ZmqTransport("b", LOOPBACK)
    opened += [a, b]
    a.add_peer("b", b.listen_address)
    sizes = [SEPARATE_FRAME_BYTES - 1, SEPARATE_FRAME_BYTES, SEPARATE_FRAME_BYTES + 1]
    payloads = [bytes([index]) * size for index, size in enumerate(sizes)]
    for payload in payloads:
        assert a.send("b", payload)
    assert [p.payload for p in collect(ZmqHarness(), b, 3)] == payloads
