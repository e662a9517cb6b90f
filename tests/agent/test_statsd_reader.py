"""The statsd reader and its queue, in one process: no datagram is lost without being counted."""

from __future__ import annotations

import importlib
import socket
import time
from pathlib import Path

import pytest

from crdtstream.agent.settings import StatsdSettings, load_settings, parse_statsd_address
from crdtstream.agent.statsd_reader import (
    COMPILED_DRAIN,
    DATAGRAM_BYTES_MAX,
    BatchQueue,
    DatagramReader,
    open_datagram_socket,
)
from crdtstream.errors import ConfigError

pytestmark = pytest.mark.timeout(60)


def test_queue_counts_what_does_not_fit_and_signals_once_per_burst() -> None:
    wake_ups: list[None] = []
    queue = BatchQueue(100, lambda: wake_ups.append(None))
    assert queue.put(b"a" * 60, 3)
    assert queue.put(b"b" * 30, 1)
    assert not queue.put(b"c" * 20, 2)  # 110 > 100 bytes: dropped whole
    assert (queue.dropped_batches, queue.dropped_datagrams, queue.dropped_bytes) == (1, 2, 20)
    assert len(wake_ups) == 1
    payloads, datagrams = queue.take(60)
    assert (payloads, datagrams) == ([b"a" * 60], 3)
    assert len(wake_ups) == 1  # not empty yet: no new signal on the next put
    assert queue.put(b"d" * 10, 1)
    assert len(wake_ups) == 1
    payloads, datagrams = queue.take(1_000)
    assert (payloads, datagrams) == ([b"b" * 30, b"d" * 10], 2)
    assert queue.bytes_queued == 0
    assert queue.put(b"e", 1)
    assert len(wake_ups) == 2  # emptied, then a new burst: one more wake-up


def test_take_returns_one_batch_even_when_it_is_over_the_bound() -> None:
    queue = BatchQueue(1_000, lambda: None)
    queue.put(b"x" * 500, 1)
    assert queue.take(10) == ([b"x" * 500], 1)


# Without a C compiler at install time only the Python loop exists; test_drain_is_compiled then
# fails once, saying so, instead of every reader test failing.
DRAINS = [
    *([pytest.param(True, id="compiled")] if COMPILED_DRAIN else []),
    pytest.param(False, id="python"),
]


def test_drain_is_compiled() -> None:
    assert COMPILED_DRAIN, "crdtstream.agent._drain was not built: readers use the Python loop"
    module = importlib.import_module("crdtstream.agent._drain")
    assert module.DATAGRAM_BYTES_MAX == DATAGRAM_BYTES_MAX


def _udp_reader(
    queue: BatchQueue, compiled: bool, buffer_bytes: int = 256 * 1024
) -> tuple[socket.socket, DatagramReader]:
    sock = open_datagram_socket(StatsdSettings("udp", host="127.0.0.1", port=0))
    return sock, DatagramReader(sock, queue, buffer_bytes=buffer_bytes, compiled=compiled)


def _lines(queue: BatchQueue) -> list[bytes]:
    payloads, _ = queue.take(1 << 30)
    return [line for payload in payloads for line in payload.split(b"\n") if line]


@pytest.mark.parametrize("compiled", DRAINS)
def test_reader_batches_datagrams_and_stop_drains_what_the_kernel_holds(compiled: bool) -> None:
    queue = BatchQueue(64 << 20, lambda: None)
    sock, reader = _udp_reader(queue, compiled)
    sent = [f"reader.test.{index}:1|c".encode() for index in range(3_000)]
    with sock, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        reader.start()
        for datagram in sent:
            sender.sendto(datagram, sock.getsockname())
        # Stopped right after the last send: what the thread had not read yet is drained.
        reader.stop(timeout_s=10)
        assert not reader.alive
    assert reader.failure is None
    assert _lines(queue) == sent
    assert reader.datagrams == len(sent)
    assert reader.bytes == sum(map(len, sent))
    # Batches, not datagrams, cross to the queue (the buffer holds about 3,500 of these).
    assert reader.batches < len(sent)


@pytest.mark.parametrize("compiled", DRAINS)
def test_stop_drains_everything_the_kernel_holds_in_several_batches(compiled: bool) -> None:
    queue = BatchQueue(64 << 20, lambda: None)
    # The smallest buffer holds about 650 of these datagrams: the drain takes several batches.
    sock, reader = _udp_reader(queue, compiled, buffer_bytes=0)
    sent = [f"drain.test.{index}:1|c|#".encode().ljust(100, b"x") for index in range(3_000)]
    with sock, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for datagram in sent:
            sender.sendto(datagram, sock.getsockname())
        reader.start()
        reader.stop(timeout_s=10)
    assert _lines(queue) == sent
    assert reader.batches >= 4


@pytest.mark.parametrize("compiled", DRAINS)
def test_multi_line_datagrams_keep_their_lines_apart(compiled: bool) -> None:
    queue = BatchQueue(1 << 20, lambda: None)
    sock, reader = _udp_reader(queue, compiled)
    with sock, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        reader.start()
        sender.sendto(b"a:1|c\nb:2|c", sock.getsockname())
        sender.sendto(b"c:3|c\n", sock.getsockname())
        sender.sendto(b"", sock.getsockname())
        sender.sendto(b"d:4|c", sock.getsockname())
        deadline = time.monotonic() + 5
        while reader.datagrams < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        reader.stop(timeout_s=10)
    assert _lines(queue) == [b"a:1|c", b"b:2|c", b"c:3|c", b"d:4|c"]


@pytest.mark.parametrize("compiled", DRAINS)
def test_a_full_queue_drops_batches_and_counts_every_datagram(compiled: bool) -> None:
    queue = BatchQueue(2_000, lambda: None)  # never taken from: it fills up
    sock, reader = _udp_reader(queue, compiled)
    with sock, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        reader.start()
        for index in range(2_000):
            sender.sendto(f"overload.{index}:1|c".encode(), sock.getsockname())
        reader.stop(timeout_s=10)
    kept = len(_lines(queue))
    assert queue.dropped_datagrams > 0
    assert kept + queue.dropped_datagrams == reader.datagrams == 2_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8125", ("udp", "127.0.0.1", 8125, "")),
        ("udp://[::1]:8125", ("udp", "::1", 8125, "")),
        ("tcp://127.0.0.1:8126", ("tcp", "127.0.0.1", 8126, "")),
        ("unix:///run/dsd.socket", ("unix", "", 0, "/run/dsd.socket")),
    ],
)
def test_statsd_addresses(text: str, expected: tuple[str, str, int, str]) -> None:
    settings = parse_statsd_address(text)
    assert (settings.scheme, settings.host, settings.port, settings.path) == expected


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('node_id = "n1"\nstatsd = "ftp://h:1"\n', "statsd"),
        ('node_id = "n1"\nstatsd = "unix://relative"\n', "statsd"),
        ('node_id = "n1"\n[statsd]\naddress = "h:1"\nreceive_buffer_bytes = 0\n', "statsd"),
        ('node_id = "n1"\n[statsd]\naddress = "h:1"\nbuffer = 5\n', "statsd.buffer"),
    ],
)
def test_bad_statsd_settings_name_their_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^{field}"):
        load_settings(path, {})


def test_statsd_table_keeps_its_limits_when_the_flag_gives_the_address(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        'node_id = "n1"\n[statsd]\naddress = "127.0.0.1:1"\nreceive_buffer_bytes = 65536\n'
    )
    settings = load_settings(path, {"statsd": "tcp://127.0.0.1:2"})
    assert settings.statsd is not None
    assert settings.statsd.address == "tcp://127.0.0.1:2"
    assert settings.statsd.receive_buffer_bytes == 65_536


@pytest.mark.parametrize("compiled", DRAINS)
def test_a_unix_socket_reader_stops_drains_and_removes_nothing_it_does_not_own(
    tmp_path: Path, compiled: bool
) -> None:
    path = tmp_path / "dsd.socket"
    queue = BatchQueue(1 << 20, lambda: None)
    sock = open_datagram_socket(StatsdSettings("unix", path=str(path)))
    reader = DatagramReader(sock, queue, compiled=compiled)
    sent = [f"unix.test.{index}:1|c|#via:uds".encode() for index in range(500)]
    huge = b"huge.line:1|c\n" * 5_000  # 70,000 bytes: more than any UDP datagram
    with sock, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        # Started first: a Unix datagram socket queues only net.unix.max_dgram_qlen datagrams
        # (10 by default), and a blocking sender waits for the reader.
        reader.start()
        for index, datagram in enumerate(sent):
            sender.sendto(datagram, str(path))
            if index == 250:
                sender.sendto(huge, str(path))  # dropped whole, never cut into a wrong line
        reader.stop(timeout_s=10)  # woken by an empty datagram to the path
        assert not reader.alive
    assert _lines(queue) == sent
    assert reader.truncated == 1
    # A stale socket file is replaced; any other file at the path is refused.
    open_datagram_socket(StatsdSettings("unix", path=str(path))).close()
    other = tmp_path / "not-a-socket"
    other.write_text("keep me")
    with pytest.raises(FileExistsError):
        open_datagram_socket(StatsdSettings("unix", path=str(other)))
    assert other.read_text() == "keep me"
