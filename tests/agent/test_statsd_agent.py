"""Agent processes taking statsd over UDP, a Unix socket and TCP: nothing lost without a count.

Each test starts real agents on free loopback ports (``bench.processes``) and stops them in
``finally``; datagrams are sent as fast as the socket takes them, by the real PyPI clients and
by a raw socket.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import statsd  # type: ignore[import-untyped]
from datadog.dogstatsd.base import DogStatsd

from bench.processes import Agent, free_port, make_agents, running

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(180)]

DEADLINE_S = 20.0


def _statsd_agent(tmp_path: Path, name: str, address: str, toml: str = "") -> Agent:
    (agent,) = make_agents(tmp_path, [name])
    agent.extra_args = ["--statsd", address]
    if toml:
        config = tmp_path / f"{name}.toml"
        config.write_text(toml)
        agent.extra_args += ["--config", str(config)]
    return agent


def _status(agent: Agent) -> dict[str, Any]:
    status: dict[str, Any] = agent.request("GET", "/v1/status")
    return status


def _wait_applied(agent: Agent, datagrams: int) -> dict[str, Any]:
    """The statsd section once ``datagrams`` are applied, or once nothing moved for three
    seconds (some were lost: the caller's assertions say how many)."""
    end = time.monotonic() + DEADLINE_S
    last, still_since = -1, time.monotonic()
    while time.monotonic() < end:
        section: dict[str, Any] = _status(agent)["statsd"]
        applied = section["datagrams_applied"] + section["queue_dropped_datagrams"]
        if applied >= datagrams and section["queue_bytes"] == 0:
            return section
        if applied != last:
            last, still_since = applied, time.monotonic()
        elif time.monotonic() - still_since > 3.0 and section["queue_bytes"] == 0:
            return section
        time.sleep(0.05)
    return section


def _windows(agent: Agent, key: str) -> list[dict[str, Any]]:
    answer = agent.request("GET", f"/v1/keys/{quote(key, safe='')}")
    windows: list[dict[str, Any]] = answer["windows"]
    return windows


def _total(agent: Agent, key: str) -> float:
    return float(sum(window["value"] for window in _windows(agent, key)))


def _distinct(agent: Agent, key: str) -> float:
    """A statsd set's distinct count (an HLL estimate, within about 1 % at these sizes)."""
    return _total(agent, key)


@pytest.fixture
def udp_agent(tmp_path: Path) -> Iterator[tuple[Agent, int]]:
    port = free_port(socket.SOCK_DGRAM)
    with running([_statsd_agent(tmp_path, "s1", f"127.0.0.1:{port}")]) as (agent,):
        yield agent, port


def test_bursts_from_real_clients_are_counted(udp_agent: tuple[Agent, int]) -> None:
    agent, port = udp_agent
    python_client = statsd.StatsClient("127.0.0.1", port)
    for index in range(1_000):
        python_client.incr("py.hits")
        python_client.set("py.users", f"user{index}")
    python_client.close()
    section = _wait_applied(agent, 2_000)
    assert _total(agent, "py.hits") >= 990
    assert _distinct(agent, "py.users") >= 980
    assert section["datagrams_applied"] >= 1_980

    dog = DogStatsd(host="127.0.0.1", port=port, disable_telemetry=True)
    for index in range(1_000):
        dog.increment("dd.hits", tags=["env:test"])
        dog.set("dd.users", f"user{index}", tags=["env:test"])
    dog.flush()
    dog.close_socket()
    section = _wait_applied(agent, 4_000)
    assert _total(agent, "dd.hits#env:test") >= 990
    assert _distinct(agent, "dd.users#env:test") >= 980
    assert section["datagrams_applied"] >= 3_960

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        for index in range(2_000):
            raw.sendto(f"raw.hits:1|c|#burst:{index % 10}".encode(), ("127.0.0.1", port))
    section = _wait_applied(agent, 6_000)
    raw_total = sum(_total(agent, f"raw.hits#burst:{shard}") for shard in range(10))
    assert raw_total >= 1_980
    # Whatever was not counted shows in a counter: received + kernel drops = sent.
    assert section["datagrams_received"] + section["kernel_drops"] == 6_000
    assert section["datagrams_applied"] == section["datagrams_received"]


def test_sigterm_drains_the_socket_and_peers_get_the_last_changes(tmp_path: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    first, second = make_agents(tmp_path, ["e1", "e2"])
    first.extra_args = ["--statsd", f"127.0.0.1:{port}"]
    with running([first, second]):
        end = time.monotonic() + DEADLINE_S
        # The last changes go to live gossip neighbours: the test needs e2 to be one.
        while time.monotonic() < end:
            member = _status(first)["members"].get("e2")
            if member is not None and member["status"] == "alive":
                break
            time.sleep(0.1)
        datagram = "\n".join(["final.hits:1|c|#env:test"] * 10).encode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            for _ in range(3_000):
                raw.sendto(datagram, ("127.0.0.1", port))
        assert first.process is not None
        process = first.process
        first.stop()  # SIGTERM at once: most of the burst is still queued somewhere
        assert process.returncode == 0, first.log_path.read_text()[-2_000:]
        # The second node got every line from the first before it left.
        assert _total(second, "final.hits#env:test") == 30_000


def _mixed_lines(seed: int) -> list[str]:
    chooser = random.Random(seed)
    stamp = int(time.time()) - 2
    lines = []
    for index in range(600):
        tags = f"#env:{chooser.choice(['prod', 'dev'])},host:h{chooser.randrange(5)}"
        kind = index % 4
        name = f"same.m{chooser.randrange(20)}"
        if kind == 0:
            lines.append(f"{name}.count:{chooser.randrange(1, 9)}|c|{tags}|T{stamp}")
        elif kind == 1:
            lines.append(f"{name}.users:u{chooser.randrange(50)}|s|{tags}|T{stamp}")
        elif kind == 2:
            lines.append(f"{name}.latency:{chooser.randrange(1, 500)}|ms|{tags}|T{stamp}")
        else:
            lines.append(f"{name}.level.{index}:{chooser.randrange(100)}|g|{tags}|T{stamp}")
    return lines


def _keys(lines: list[str]) -> set[str]:
    keys = set()
    for line in lines:
        name = line.split(":", 1)[0]
        tags = line.split("|#", 1)[1].split("|", 1)[0].split(",")
        keys.add(f"{name}#{','.join(sorted(tags))}")
    return keys


def test_unix_and_tcp_inputs_give_the_same_state_as_udp(tmp_path: Path) -> None:
    seed = 11
    udp_port, tcp_port = free_port(socket.SOCK_DGRAM), free_port()
    socket_path = tmp_path / "dsd.socket"
    # A minute of lateness: a slow machine must not make one agent's lines late and not
    # another's (the lines carry one event time, |T).
    lateness = "[window]\nallowed_lateness_ms = 60000\n"
    agents = [
        _statsd_agent(tmp_path, name, address, f'node_id = "{name}"\n{lateness}')
        for name, address in (
            ("u1", f"127.0.0.1:{udp_port}"),
            ("x1", f"unix://{socket_path}"),
            ("t1", f"tcp://127.0.0.1:{tcp_port}"),
        )
    ]
    with running(agents) as (udp_agent, unix_agent, tcp_agent):
        lines = _mixed_lines(seed)
        datagrams = ["\n".join(lines[start : start + 10]).encode() for start in range(0, 600, 10)]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for datagram in datagrams:
                sender.sendto(datagram, ("127.0.0.1", udp_port))
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            for datagram in datagrams:
                sender.sendto(datagram, str(socket_path))
        stream = ("\n".join(lines) + "\n").encode()
        chooser = random.Random(seed)
        with socket.create_connection(("127.0.0.1", tcp_port)) as connection:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            offset = 0
            while offset < len(stream):
                # Cuts anywhere, lines split across writes included.
                size = chooser.randrange(1, 700)
                connection.sendall(stream[offset : offset + size])
                offset += size
                time.sleep(0.001)
        for agent in (udp_agent, unix_agent, tcp_agent):
            end = time.monotonic() + DEADLINE_S
            while _status(agent)["ingest"]["lines_ok"] < len(lines) and time.monotonic() < end:
                time.sleep(0.05)
            ingest = _status(agent)["ingest"]
            assert ingest["lines_ok"] == len(lines), f"seed={seed}"
            assert ingest["events_late"] == 0, f"seed={seed}"
        for key in sorted(_keys(lines)):
            expected = _windows(udp_agent, key)
            assert expected, key
            assert _windows(unix_agent, key) == expected, f"{key} seed={seed}"
            assert _windows(tcp_agent, key) == expected, f"{key} seed={seed}"


def test_a_forced_overload_is_counted_never_silent(tmp_path: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    toml = (
        'node_id = "o1"\n[statsd]\nreceive_buffer_bytes = 4096\nqueue_bytes_max = 4096\n'
        "apply_interval_ms = 500\n"
    )
    sent = 20_000
    with running([_statsd_agent(tmp_path, "o1", f"127.0.0.1:{port}", toml)]) as (agent,):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            for index in range(sent):
                raw.sendto(f"overload.hits:1|c|#n:{index % 7}".encode(), ("127.0.0.1", port))
        section = _wait_applied(agent, sent)
        counted = sum(_total(agent, f"overload.hits#n:{shard}") for shard in range(7))
    kernel, queue = section["kernel_drops"], section["queue_dropped_datagrams"]
    assert kernel + queue > 0, section
    assert section["datagrams_received"] + kernel == sent, section
    assert section["datagrams_applied"] + queue == section["datagrams_received"], section
    assert counted == section["datagrams_applied"]


def test_several_readers_on_one_port_count_every_datagram(tmp_path: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    toml = 'node_id = "r1"\n[statsd]\nreaders = 2\n'
    with running([_statsd_agent(tmp_path, "r1", f"127.0.0.1:{port}", toml)]) as (agent,):
        # Several source ports, so the kernel spreads them over both sockets.
        senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
        try:
            for index in range(2_000):
                senders[index % 8].sendto(b"spread.hits:1|c", ("127.0.0.1", port))
        finally:
            for sender in senders:
                sender.close()
        section = _wait_applied(agent, 2_000)
        assert section["readers"] == 2
        assert section["datagrams_received"] + section["kernel_drops"] == 2_000
        assert _total(agent, "spread.hits") == section["datagrams_applied"] >= 1_980


def test_tcp_lines_too_long_are_counted_and_shutdown_keeps_a_last_partial_line(
    tmp_path: Path,
) -> None:
    port = free_port()
    toml = 'node_id = "t9"\n[statsd]\ntcp_line_bytes_max = 100\n'
    agent = _statsd_agent(tmp_path, "t9", f"tcp://127.0.0.1:{port}", toml)
    with running([agent]):
        with socket.create_connection(("127.0.0.1", port)) as connection:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for piece in (b"x" * 300, b"y" * 300, b"\nok.hits:1|c\nok.", b"hits:1|c\n"):
                connection.sendall(piece)
                time.sleep(0.05)
            connection.sendall(b"tail.hits:5|c")  # no newline, and the connection stays open
            end = time.monotonic() + DEADLINE_S
            while _status(agent)["ingest"]["lines_ok"] < 2 and time.monotonic() < end:
                time.sleep(0.05)
            status = _status(agent)
            assert status["statsd"]["tcp_lines_too_long"] == 1
            assert status["ingest"] == {**status["ingest"], "lines_ok": 2, "lines_rejected": 0}
            process = agent.process
            assert process is not None
            agent.stop()  # SIGTERM with the connection still open: the agent must not hang
            assert process.returncode == 0, agent.log_path.read_text()[-2_000:]
        agent.start()
        agent.wait_ready(20.0)
        assert _total(agent, "ok.hits") == 2
        assert _total(agent, "tail.hits") == 5  # kept at shutdown, in the final snapshot


def test_status_counters_are_a_subset_of_the_status_section(
    udp_agent: tuple[Agent, int],
) -> None:
    from crdtstream.agent.statsd_input import COUNTER_NAMES

    agent, _ = udp_agent
    section = _status(agent)["statsd"]
    assert set(COUNTER_NAMES) <= set(section)
