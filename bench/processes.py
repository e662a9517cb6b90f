"""Agent processes on loopback, for benchmarks and multi-process tests: start, reach, stop.

Every port is picked free on 127.0.0.1; callers stop what they start in ``finally`` blocks
(:func:`running` does it for them).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REQUEST_TIMEOUT_S = 2.0


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port that was free on 127.0.0.1 a moment ago, below the kernel's ephemeral range and
    never handed out before by this process.

    A port picked by binding port 0 comes from the ephemeral range, where the kernel also takes
    the source port of every outgoing connection: between the pick and the agent's own bind, a
    peer reconnecting to a node not up yet could take it ("address already in use"). Ports
    below the range are only ever taken by an explicit bind.
    """
    low, high = _PORT_RANGE
    for _ in range(1_000):
        port = _PORT_PICKER.randrange(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise OSError(f"no free port in [{low}, {high}) after 1,000 tries")


def _ports_below_ephemeral() -> tuple[int, int]:
    """Ports from 10,000 up to the start of the kernel's ephemeral range (Linux: 32768)."""
    try:
        first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32_768
    return 10_000, max(first, 10_001)


_PORT_RANGE = _ports_below_ephemeral()
_PORT_PICKER = random.Random(os.getpid() ^ time.monotonic_ns())
_HANDED_OUT: set[int] = set()


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``args`` with stdout and stderr appended to ``log_path``."""
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=os.environ)


def _kill(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL ``process`` if it still runs, and reap it."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)


@dataclass
class Agent:
    """One ``crdtstream agent`` process and how to reach it."""

    node_id: str
    gossip_port: int
    http_port: int
    data_dir: Path
    peers: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def gossip_address(self) -> str:
        return f"tcp://127.0.0.1:{self.gossip_port}"

    def start(self) -> None:
        args = [
            sys.executable,
            "-m",
            "crdtstream",
            "agent",
            "--node-id",
            self.node_id,
            "--listen",
            self.gossip_address,
            "--http",
            f"127.0.0.1:{self.http_port}",
            "--data-dir",
            str(self.data_dir),
            *[item for peer in self.peers for item in ("--peer", peer)],
            *self.extra_args,
        ]
        self.process = _spawn(args, self.log_path)

    def kill(self) -> None:
        _kill(self.process)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def request(self, method: str, path: str, body: bytes | None = None) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method
        )
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            return json.loads(response.read())

    def wait_ready(self, deadline_s: float) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.node_id} exited: {self.log_path.read_text()[-2000:]}")
            try:
                self.request("GET", "/v1/status")
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        raise TimeoutError(f"{self.node_id} did not answer within {deadline_s} s")


def make_agents(root: Path, names: list[str]) -> list[Agent]:
    """Agents on free ports that all list each other as peers."""
    ports = {name: (free_port(), free_port()) for name in names}
    agents = []
    for name in names:
        peers = [f"{o}=tcp://127.0.0.1:{ports[o][0]}" for o in names if o != name]
        agents.append(
            Agent(
                node_id=name,
                gossip_port=ports[name][0],
                http_port=ports[name][1],
                data_dir=root / name,
                peers=peers,
                log_path=root / f"{name}.log",
            )
        )
    return agents


def make_voters(root: Path, names: list[str], policy: str) -> list[Agent]:
    """Agents that are all Raft voters, with ``policy`` (``PATTERN=MODE``) on each."""
    agents = make_agents(root, names)
    voters = [f"{a.node_id}=tcp://127.0.0.1:{a.gossip_port}" for a in agents]
    for agent in agents:
        agent.extra_args = [
            *[item for voter in voters for item in ("--raft-voter", voter)],
            "--policy",
            policy,
        ]
    return agents


@contextmanager
def running(agents: list[Agent], ready_deadline_s: float = 20.0) -> Iterator[list[Agent]]:
    """Start ``agents``, wait until each answers HTTP, and kill them all on the way out."""
    try:
        for agent in agents:
            agent.start()
        for agent in agents:
            agent.wait_ready(ready_deadline_s)
        yield agents
    finally:
        for agent in agents:
            agent.kill()


@dataclass
class EtcdMember:
    """One ``etcd`` process of a loopback cluster (the anchor of the Raft benchmark)."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    initial_cluster: str
    executable: str = "etcd"
    advertise_peer_port: int | None = None
    """The peer port the others are told (a router in front of ``peer_port``), or the same."""
    token: str = "crdtstream-bench"
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int:
        """The process id, 0 when not running."""
        return 0 if self.process is None else self.process.pid

    def start(self) -> None:
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        advertised = self.advertise_peer_port or self.peer_port
        advertised_url = f"http://127.0.0.1:{advertised}"
        args = [
            self.executable,
            *("--name", self.name, "--data-dir", str(self.data_dir)),
            *("--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url),
            *("--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", advertised_url),
            *("--initial-cluster", self.initial_cluster, "--initial-cluster-state", "new"),
            *("--initial-cluster-token", self.token, "--logger", "zap"),
            *("--log-level", "warn"),
            *self.extra_args,
        ]
        self.process = _spawn(args, self.log_path)

    def kill(self) -> None:
        _kill(self.process)
        self.process = None

    def wait_ready(self, deadline_s: float) -> None:
        """Until ``/health`` says healthy, which etcd does only once the cluster has a leader."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"etcd {self.name} exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(
                    f"{self.client_url}/health", timeout=REQUEST_TIMEOUT_S
                ) as response:
                    if json.loads(response.read()).get("health") == "true":
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"etcd {self.name} not healthy within {deadline_s} s")


def make_etcd_members(root: Path, names: list[str], executable: str) -> list[EtcdMember]:
    """etcd members on free loopback ports that form one new cluster, data under ``root``."""
    ports = {name: (free_port(), free_port()) for name in names}
    cluster = ",".join(f"{n}=http://127.0.0.1:{ports[n][1]}" for n in names)
    return [
        EtcdMember(
            name,
            ports[name][0],
            ports[name][1],
            root / name,
            root / f"{name}.log",
            cluster,
            executable,
        )
        for name in names
    ]


@contextmanager
def etcd_running(members: list[EtcdMember], ready_deadline_s: float = 30.0) -> Iterator[None]:
    """Start ``members``, wait until each is healthy, and kill them all on the way out."""
    try:
        for member in members:
            member.start()
        for member in members:
            member.wait_ready(ready_deadline_s)
        yield
    finally:
        for member in members:
            member.kill()


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds of each process so far, from ``/proc`` ({} where there is
    none)."""
    seconds: dict[str, float] = {}
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return {}
        seconds[name] = (int(fields[11]) + int(fields[12])) / ticks_per_s
    return seconds
