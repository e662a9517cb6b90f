"""The ZeroMQ transport, and CurveZMQ key files. The only module of the project that imports zmq.

Sockets. Each endpoint binds one PULL socket at its listen address (``tcp://host:port`` or
``ipc://path``) and opens one PUSH socket per peer, connected to the peer's PULL. Traffic is
one-way per socket pair: a node sends through its PUSH sockets and receives on its PULL only;
a reply travels over the replier's own PUSH. This is the ROUTER/DEALER design with the routing
taken out, because nothing is ever routed back: a ROUTER prepends an identity frame to every
message, and keeping the frames of hostile multi-frame messages aligned then costs a
``RCVMORE`` query per message, which in pyzmq costs about as much as two reads (each option
query goes through a Python enum). Here a small message is one self-describing frame, and only
large ones, where a query is cheap next to the copy, pay it (see Framing).

Never blocking. Every send is ``NOBLOCK`` into a PUSH whose ``SNDHWM`` is
``send_queue_messages``; at the mark the send is refused and counted (``dropped_full``), so a
dead or slow peer costs a bounded queue and nothing else. ``LINGER`` is 0 so ``close`` never
waits. PUSH sockets reconnect with exponential backoff from ``reconnect_ms_min`` to
``reconnect_ms_max`` and exchange ZMTP heartbeats so a silently dead connection is noticed.
Messages sent before the connection is up are queued (up to the mark) and go out on connect.
The PULL's ``RCVHWM`` is ``receive_queue_messages``; beyond it libzmq stops reading and TCP
pushes back on the senders, whose queues then fill.

Framing. A message starts with a header: one byte :data:`PROTOCOL_VERSION`, one byte of
layout, one byte with the length of the sender's node id, and the node id in ASCII. A payload
under :data:`SEPARATE_FRAME_BYTES` follows the header in the same frame (layout 0), so a small
message is one frame and one ``recv``; a larger payload travels in a second frame of the same
message (layout 1), so it is never copied to be joined to its header. The receiver checks
``RCVMORE`` only after a layout-1 header, where one query is cheap next to the payload; every
other frame stands on its own, so no sequence of frames can desynchronise the receiver. A frame
with another version or layout, a truncated header, or a header that names no valid node id is
dropped and counted as malformed; headers are validated once per sender and then recognised
from a cache. ``MAXMSGSIZE`` is twice the payload limit: a peer with a somewhat larger limit
loses only its oversize packets (dropped and counted by our own check), while anything larger
makes libzmq drop the connection before allocating it.

Security. With CurveZMQ every connection is encrypted and both ends are authenticated: a PUSH
connects only to a peer whose public key is on the allow-list and checks the server's key in the
handshake, so it never hands data to a stranger; the PULL lets in only clients whose key is on
the allow-list (ZAP), and also checks that the ``User-Id`` libzmq attaches to each message (the
node id the authenticator mapped the key to) equals the sender named in the header, so an
allowed node cannot speak for another. Refused handshakes and mismatches are counted in
``rejected_unauthenticated``. The authenticator is pyzmq's *thread* authenticator: the ZAP
handshake must be answered even while the driver is not inside an event loop (step-by-step
drivers, the benchmark, synchronous tests), which the asyncio authenticator cannot promise.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, cast

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from crdtstream.config import TransportConfig
from crdtstream.errors import (
    ConfigError,
    PayloadTooLargeError,
    PeerUnknownError,
    TransportClosedError,
    TransportError,
)
from crdtstream.ids import validate_node_id
from crdtstream.transport import Packet, TransportStats

__all__ = [
    "PROTOCOL_VERSION",
    "SEPARATE_FRAME_BYTES",
    "CurveKeys",
    "ZmqTransport",
    "curve_keys_from_config",
    "generate_curve_keypair",
    "generate_key_pair",
    "load_key_pair",
    "load_public_keys",
]

PROTOCOL_VERSION = 1
"""The first byte of every header; a message with another version is dropped as malformed."""

SEPARATE_FRAME_BYTES = 16 * 1024
"""Payloads this large go in a frame of their own instead of being copied behind the header."""

_NOBLOCK = zmq.NOBLOCK
_NOBLOCK_MORE = zmq.NOBLOCK | zmq.SNDMORE
_LAYOUT_INLINE = 0
_LAYOUT_SEPARATE = 1
_HEADER_BYTES_MIN = 4
_PROBED_READS = 8
"""Reads preceded by a cheap readiness probe. pyzmq raises ``Again`` when a non-blocking read
finds nothing, and that exception costs several reads; so the first reads of a batch, which are
the likely ones to find the queue empty, ask first, and a long queue is then read blind."""
_SENDER_CACHE_ENTRIES_MAX = 4_096
"""Decoded headers remembered, so a header is validated once, not once per message."""

HEARTBEAT_INTERVAL_MS = 1_000
HEARTBEAT_TIMEOUT_MS = 3_000
ZAP_DOMAIN = "crdtstream"
_ADDRESS_SCHEMES = ("tcp://", "ipc://")
_SECRET_SUFFIX = ".key_secret"
_PUBLIC_SUFFIX = ".key"


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """This node's CurveZMQ key pair and the allow-list: node id -> public key (Z85, 40 bytes)."""

    public_key: bytes
    secret_key: bytes
    allowed: Mapping[str, bytes] = field(default_factory=dict)


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn a zmq exception into our tree, so no caller ever sees a zmq type."""
    try:
        yield
    except zmq.ZMQError as error:
        if error.errno in (zmq.ETERM, zmq.ENOTSOCK):
            raise TransportClosedError(f"{action}: {error}") from error
        raise TransportError(f"{action}: {error}") from error


def _int_option(socket: zmq.Socket[bytes], option: int) -> int:
    value = socket.getsockopt(option)
    if not isinstance(value, int):
        raise TransportError(f"socket option {option} is not an integer: {value!r}")
    return value


def _check_address(address: str) -> None:
    if not address.startswith(_ADDRESS_SCHEMES):
        raise TransportError(f"address {address!r} must start with tcp:// or ipc://")


def generate_key_pair(directory: str | os.PathLike[str], node_id: str) -> tuple[Path, Path]:
    """Write ``<node_id>.key`` (public) and ``<node_id>.key_secret`` (mode 0600) in ``directory``.

    The secret file is created with mode 0600 from the start, never widened afterwards, and
    never overwritten: an existing file raises :class:`FileExistsError`. Returns both paths.
    """
    validate_node_id(node_id)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    public_key, secret_key = generate_curve_keypair()
    public_path = folder / f"{node_id}{_PUBLIC_SUFFIX}"
    secret_path = folder / f"{node_id}{_SECRET_SUFFIX}"
    for path in (public_path, secret_path):
        if path.exists():
            raise FileExistsError(f"{path} exists; refusing to overwrite a key")
    _write_key_file(secret_path, public_key, secret_key, mode=0o600)
    _write_key_file(public_path, public_key, None, mode=0o644)
    return public_path, secret_path


def _write_key_file(path: Path, public_key: bytes, secret_key: bytes | None, mode: int) -> None:
    kind = "Secret" if secret_key else "Public"
    lines = [f"#   ZeroMQ CURVE {kind} Certificate (crdtstream keygen)", "", "metadata", "curve"]
    lines.append(f'    public-key = "{public_key.decode("ascii")}"')
    if secret_key:
        lines.append(f'    secret-key = "{secret_key.decode("ascii")}"')
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write("\n".join(lines) + "\n")


def load_key_pair(secret_path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """Read ``(public_key, secret_key)``; refuse a file that group or others may read.

    Raises :class:`ConfigError` naming the file for a readable-by-others, missing or malformed
    secret, as ssh does for its private keys.
    """
    path = Path(secret_path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"transport.curve_secret_key_path: {path} is readable by others "
                f"(mode {mode:#o}); run chmod 600 on it"
            )
        public_key, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as error:
        raise ConfigError(f"transport.curve_secret_key_path: {error}") from error
    if secret_key is None:
        raise ConfigError(f"transport.curve_secret_key_path: {path} holds no secret key")
    return public_key, secret_key


def load_public_keys(directory: str | os.PathLike[str]) -> dict[str, bytes]:
    """The allow-list: ``{node_id: public_key}`` from every ``<node_id>.key`` in ``directory``."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ConfigError(f"transport.curve_public_keys_dir: {folder} is not a directory")
    keys: dict[str, bytes] = {}
    for path in sorted(folder.glob(f"*{_PUBLIC_SUFFIX}")):
        try:
            keys[validate_node_id(path.stem)], _ = zmq.auth.load_certificate(path)
        except (OSError, ValueError) as error:
            raise ConfigError(f"transport.curve_public_keys_dir: {path}: {error}") from error
    return keys


def curve_keys_from_config(config: TransportConfig) -> CurveKeys | None:
    """The keys named by ``config`` when ``curve_enabled``, else ``None``."""
    if not config.curve_enabled:
        return None
    secret_path, keys_dir = config.curve_secret_key_path, config.curve_public_keys_dir
    if not secret_path or not keys_dir:
        raise ConfigError("transport: curve_enabled needs both key paths")
    public_key, secret_key = load_key_pair(secret_path)
    return CurveKeys(public_key, secret_key, load_public_keys(keys_dir))


class _Authenticator(ThreadAuthenticator):
    """ZAP handler: lets in allow-listed keys, names them by node id, counts refusals."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], allowed: Mapping[str, bytes]):
        super().__init__(context)
        self.node_by_key = {key: node_id for node_id, key in allowed.items()}
        self.refused = 0
        self.configure_curve_callback(ZAP_DOMAIN, credentials_provider=self)

    def callback(self, domain: str, key: bytes) -> bool:
        """Whether the Z85 public ``key`` is allowed; runs in the authenticator's thread."""
        if key in self.node_by_key:
            return True
        self.refused += 1  # only this thread writes it; readers see a slightly old value
        return False

    def curve_user_id(self, client_public_key: bytes) -> str:
        """The node id of an allowed binary key: libzmq attaches it to each message."""
        return self.node_by_key[z85.encode(client_public_key)]


@dataclass(slots=True)
class _Counters:
    sent: int = 0
    dropped_full: int = 0
    rejected_unknown_peer: int = 0
    rejected_oversize: int = 0
    received: int = 0
    dropped_oversize: int = 0
    dropped_malformed: int = 0
    rejected_unauthenticated: int = 0


class ZmqTransport:
    """A :class:`crdtstream.transport.Transport` over ZeroMQ; see the module docstring.

    ``listen_address`` may use port 0 (or ``*``) to let the system pick a free port;
    :attr:`listen_address` then reports the real one. ``curve`` turns CurveZMQ on; by default
    it comes from ``config`` (:func:`curve_keys_from_config`). The endpoint owns its own zmq
    context and closes it in :meth:`close`. Use one endpoint from one thread.
    """

    def __init__(
        self,
        node_id: str,
        listen_address: str,
        config: TransportConfig | None = None,
        *,
        curve: CurveKeys | None = None,
    ) -> None:
        self._node_id = validate_node_id(node_id)
        self.config = config or TransportConfig()
        self._curve = curve if curve is not None else curve_keys_from_config(self.config)
        identity = node_id.encode("ascii")
        self._header_inline = bytes((PROTOCOL_VERSION, _LAYOUT_INLINE, len(identity))) + identity
        self._header_separate = (
            bytes((PROTOCOL_VERSION, _LAYOUT_SEPARATE, len(identity))) + identity
        )
        self._sender_by_header: dict[bytes, str] = {}
        self._counters = _Counters()
        self._peer_addresses: dict[str, str] = {}
        self._push_sockets: dict[str, zmq.Socket[bytes]] = {}
        self._max_payload_bytes = self.config.max_payload_bytes
        self._closed = False
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        _check_address(listen_address)
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context(io_threads=1)
        self._authenticator: _Authenticator | None = None
        try:
            self._pull = self._open_pull(listen_address)
        except BaseException:
            self._release_context()
            raise

    def _open_pull(self, listen_address: str) -> zmq.Socket[bytes]:
        with _translated(f"{self._node_id}: binding {listen_address}"):
            pull = self._context.socket(zmq.PULL)
            pull.setsockopt(zmq.LINGER, 0)
            pull.setsockopt(zmq.RCVHWM, self.config.receive_queue_messages)
            pull.setsockopt(zmq.MAXMSGSIZE, 2 * self.config.max_payload_bytes)
            if self._curve is not None:
                self._authenticator = _Authenticator(self._context, self._curve.allowed)
                self._authenticator.start()
                pull.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
                pull.setsockopt(zmq.CURVE_SERVER, 1)
                pull.setsockopt(zmq.CURVE_PUBLICKEY, self._curve.public_key)
                pull.setsockopt(zmq.CURVE_SECRETKEY, self._curve.secret_key)
            try:
                pull.bind(listen_address)
            except zmq.ZMQError:
                pull.close(0)
                raise
            self.listen_address: str = pull.getsockopt_string(zmq.LAST_ENDPOINT)
            self._pull_fd = _int_option(pull, zmq.FD)
            return pull

    @property
    def node_id(self) -> str:
        """This endpoint's node id, named in the header of every message it sends."""
        return self._node_id

    @property
    def max_payload_bytes(self) -> int:
        """The payload limit from the endpoint's :class:`TransportConfig`."""
        return self.config.max_payload_bytes

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def add_peer(self, peer_id: str, address: str) -> None:
        """Open a PUSH to ``peer_id`` at ``address``; a new address replaces the old socket.

        With CurveZMQ the peer must be on the allow-list (else :class:`PeerUnknownError`,
        counted in ``rejected_unauthenticated``): its key is what proves the far end is it.
        """
        self._check_open()
        validate_node_id(peer_id)
        _check_address(address)
        if self._peer_addresses.get(peer_id) == address:
            return
        server_key = None
        if self._curve is not None:
            server_key = self._curve.allowed.get(peer_id)
            if server_key is None:
                self._counters.rejected_unauthenticated += 1
                raise PeerUnknownError(f"{self._node_id}: no public key for peer {peer_id!r}")
        self.remove_peer(peer_id)
        self._push_sockets[peer_id] = self._open_push(address, server_key)
        self._peer_addresses[peer_id] = address

    def _open_push(self, address: str, server_key: bytes | None) -> zmq.Socket[bytes]:
        with _translated(f"{self._node_id}: connecting to {address}"):
            push = self._context.socket(zmq.PUSH)
            options = {
                zmq.LINGER: 0,
                zmq.SNDHWM: self.config.send_queue_messages,
                zmq.RECONNECT_IVL: self.config.reconnect_ms_min,
                zmq.RECONNECT_IVL_MAX: self.config.reconnect_ms_max,
                zmq.HEARTBEAT_IVL: HEARTBEAT_INTERVAL_MS,
                zmq.HEARTBEAT_TIMEOUT: HEARTBEAT_TIMEOUT_MS,
            }
            for option, value in options.items():
                push.setsockopt(option, value)
            if self._curve is not None and server_key is not None:
                push.setsockopt(zmq.CURVE_SERVERKEY, server_key)
                push.setsockopt(zmq.CURVE_PUBLICKEY, self._curve.public_key)
                push.setsockopt(zmq.CURVE_SECRETKEY, self._curve.secret_key)
            try:
                push.connect(address)
            except zmq.ZMQError:
                push.close(0)
                raise
            return push

    def remove_peer(self, peer_id: str) -> None:
        """Close the peer's PUSH, discarding what is still queued for it; unknown is a no-op."""
        self._peer_addresses.pop(peer_id, None)
        push = self._push_sockets.pop(peer_id, None)
        if push is not None:
            push.close(0)

    def send(self, peer_id: str, payload: bytes) -> bool:
        """Queue ``payload`` for ``peer_id`` without blocking; ``False`` at the high-water mark."""
        push = self._push_sockets.get(peer_id)  # empty once closed
        size = len(payload)
        if push is None or size > self._max_payload_bytes:
            self._refuse(peer_id, size)
        try:
            if size < SEPARATE_FRAME_BYTES:
                push.send(self._header_inline + payload, _NOBLOCK)
            else:
                # The mark is checked on the first frame; libzmq then takes the whole message.
                push.send(self._header_separate, _NOBLOCK_MORE)
                push.send(payload, _NOBLOCK)
        except zmq.Again:
            self._counters.dropped_full += 1
            return False
        except zmq.ZMQError as error:
            raise TransportError(f"{self._node_id}: send to {peer_id!r}: {error}") from error
        self._counters.sent += 1
        return True

    def _refuse(self, peer_id: str, size: int) -> NoReturn:
        """Raise (and count) the error for a send that cannot be queued at all."""
        self._check_open()
        if peer_id not in self._push_sockets:
            self._counters.rejected_unknown_peer += 1
            raise PeerUnknownError(f"{self._node_id}: unknown peer {peer_id!r}")
        self._counters.rejected_oversize += 1
        raise PayloadTooLargeError(f"payload of {size} bytes exceeds {self._max_payload_bytes}")

    def receive(self, max_packets: int) -> list[Packet]:
        """Return up to ``max_packets`` packets that have arrived; never waits."""
        self._check_open()
        if max_packets < 1:
            raise ValueError(f"max_packets must be >= 1, got {max_packets}")
        if self._curve is not None:
            return self._receive_authenticated(max_packets)
        packets: list[Packet] = []
        receive, probe, known_sender = self._pull.recv, self._pull.get, self._sender_by_header.get
        limit, make_packet = self.config.max_payload_bytes, Packet._make  # _make: the fast path
        with _translated(f"{self._node_id}: receive"):
            for index in range(max_packets):
                if index < _PROBED_READS and not cast(int, probe(zmq.EVENTS)) & zmq.POLLIN:
                    break
                try:
                    data = receive(zmq.NOBLOCK)
                except zmq.Again:
                    break
                # The common case inline: a known one-frame header, a payload within the limit.
                end = 3 + data[2] if len(data) >= _HEADER_BYTES_MIN else 0
                sender = known_sender(data[:end])
                if sender is not None and data[1] == _LAYOUT_INLINE and len(data) - end <= limit:
                    packets.append(make_packet((sender, data[end:])))
                    continue
                packet = self._accept(data, None)
                if packet is not None:
                    packets.append(packet)
        self._counters.received += len(packets)
        return packets

    def _receive_authenticated(self, max_packets: int) -> list[Packet]:
        """``receive`` with CurveZMQ: each frame carries the ``User-Id`` its handshake proved."""
        packets: list[Packet] = []
        receive, probe = self._pull.recv, self._pull.get
        with _translated(f"{self._node_id}: receive"):
            for index in range(max_packets):
                if index < _PROBED_READS and not cast(int, probe(zmq.EVENTS)) & zmq.POLLIN:
                    break
                try:
                    frame = receive(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                user_id = frame.get("User-Id")
                proven_sender = user_id if isinstance(user_id, str) else None
                packet = self._accept(frame.bytes, proven_sender)
                if packet is not None:
                    packets.append(packet)
        self._counters.received += len(packets)
        return packets

    def _accept(self, data: bytes, proven_sender: str | None) -> Packet | None:
        """The packet that starts with ``data``, or ``None`` (counted) when it is refused.

        Reads the payload frame of a layout-1 message. ``proven_sender`` is the node id that
        CurveZMQ authenticated, when CurveZMQ is on.
        """
        end = 3 + data[2] if len(data) >= _HEADER_BYTES_MIN else 0
        sender = self._sender_by_header.get(data[:end]) or self._learn_sender(data[:end])
        if sender is None:
            self._counters.dropped_malformed += 1
            return None
        payload = data[end:]
        if data[1] == _LAYOUT_SEPARATE:
            if payload or not self._pull.getsockopt(zmq.RCVMORE):
                self._counters.dropped_malformed += 1
                return None
            payload = self._pull.recv()  # already here: a message arrives whole
        if self._curve is not None and proven_sender != sender:
            self._counters.rejected_unauthenticated += 1
        elif len(payload) > self.config.max_payload_bytes:
            self._counters.dropped_oversize += 1
        else:
            return Packet(sender, payload)
        return None

    def _learn_sender(self, header: bytes) -> str | None:
        """The node id a header names, remembered; ``None`` if the header is not valid."""
        if len(header) < _HEADER_BYTES_MIN or header[0] != PROTOCOL_VERSION:
            return None
        if header[1] not in (_LAYOUT_INLINE, _LAYOUT_SEPARATE) or len(header) != 3 + header[2]:
            return None  # an unknown layout, or the frame ended inside the header
        try:
            sender = validate_node_id(header[3:].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None
        if len(self._sender_by_header) >= _SENDER_CACHE_ENTRIES_MAX:
            self._sender_by_header.clear()
        self._sender_by_header[header] = sender
        return sender

    def poll_readable(self, timeout_ms: int) -> bool:
        """Block up to ``timeout_ms`` until a message is waiting; for drivers without asyncio."""
        self._check_open()
        with _translated(f"{self._node_id}: poll"):
            # zmq_poll itself: Socket.poll builds a Poller object on every call.
            return bool(zmq.zmq_poll([(self._pull, zmq.POLLIN)], timeout_ms))

    def _has_input(self) -> bool:
        with _translated(f"{self._node_id}: poll"):
            return bool(_int_option(self._pull, zmq.EVENTS) & zmq.POLLIN)

    async def wait_readable(self, timeout_ms: int) -> bool:
        """Wait up to ``timeout_ms`` for a message without blocking the event loop.

        The loop watches the PULL socket's notification descriptor; libzmq signals it edge-style,
        so each wake-up re-reads ``EVENTS``, which also re-arms it. One waiter at a time.
        """
        self._check_open()
        if self._has_input():
            return True
        if self._waiter is not None:
            raise TransportError(f"{self._node_id}: wait_readable is already being awaited")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        wake = asyncio.Event()
        self._waiter = (loop, wake)
        loop.add_reader(self._pull_fd, wake.set)
        try:
            while not self._closed and (remaining := deadline - loop.time()) > 0:
                try:
                    await asyncio.wait_for(wake.wait(), remaining)
                except TimeoutError:
                    break
                wake.clear()
                if not self._closed and self._has_input():
                    return True
        finally:
            self._stop_waiting()
        self._check_open()
        return self._has_input()

    def _stop_waiting(self) -> None:
        if self._waiter is not None:
            loop, wake = self._waiter
            self._waiter = None
            if not loop.is_closed():
                loop.remove_reader(self._pull_fd)
            wake.set()

    def stats(self) -> TransportStats:
        """A snapshot of this endpoint's counters (ZAP refusals included)."""
        counters = self._counters
        refused = self._authenticator.refused if self._authenticator is not None else 0
        return TransportStats(
            sent=counters.sent,
            dropped_full=counters.dropped_full,
            rejected_unknown_peer=counters.rejected_unknown_peer,
            rejected_oversize=counters.rejected_oversize,
            received=counters.received,
            dropped_oversize=counters.dropped_oversize,
            dropped_malformed=counters.dropped_malformed,
            rejected_unauthenticated=counters.rejected_unauthenticated + refused,
        )

    def close(self) -> None:
        """Close every socket at once (linger 0), stop the authenticator, end the context."""
        if self._closed:
            return
        self._closed = True
        self._stop_waiting()
        with _translated(f"{self._node_id}: close"):
            for peer_id in list(self._push_sockets):
                self.remove_peer(peer_id)
            self._pull.close(0)
            self._release_context()

    def _release_context(self) -> None:
        if self._authenticator is not None:
            self._authenticator.stop()
        self._context.term()

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError(f"{self._node_id}: endpoint is closed")


def generate_curve_keypair() -> tuple[bytes, bytes]:
    """A fresh CurveZMQ ``(public_key, secret_key)`` pair in Z85, held in memory only."""
    with _translated("generating a CURVE key pair"):  # fails only if libzmq lacks CURVE
        return zmq.curve_keypair()
