"""The statsd servers ``crdtstream bench agent`` measures: the agent, Etsy statsd, collectd.

Each is a process started on a free loopback port; :meth:`Server.counted_lines` says how many
lines it counted so far (``None`` for collectd, which keeps no count: its loss is the kernel's
drop counter for its socket, :func:`udp_socket_state`).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.processes import Agent, free_port

__all__ = [
    "AgentServer",
    "CollectdServer",
    "EtsyServer",
    "Server",
    "udp_socket_state",
    "wait_for",
]


# ---------------------------------------------------------------- kernel view of a UDP port


def udp_socket_state(port: int) -> tuple[int, int] | None:
    """``(rx_queue_bytes, drops)`` of the UDP socket bound to ``port`` on this host."""
    suffix = f":{port:04X}"
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) >= 13 and fields[1].endswith(suffix):
                return int(fields[4].split(":")[1], 16), int(fields[12])
    return None


# ---------------------------------------------------------------- servers


@dataclass
class Server:
    """One statsd server under test: how to start it, stop it, and read what it counted."""

    name: str
    port: int
    root: Path
    process: subprocess.Popen[bytes] | None = None
    agent: Agent | None = None

    @property
    def pid(self) -> int:
        if self.agent is not None and self.agent.process is not None:
            return self.agent.process.pid
        return 0 if self.process is None else self.process.pid

    def start(self) -> None:
        raise NotImplementedError

    def counted_lines(self) -> int | None:
        """Lines counted so far (None: count by the kernel's drops instead)."""
        raise NotImplementedError

    def apply_seconds(self) -> float | None:
        """CPU seconds spent parsing and applying so far, where the server tells."""
        return None

    def drained(self) -> bool:
        state = udp_socket_state(self.port)
        return state is None or state[0] == 0

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@dataclass
class AgentServer(Server):
    config: str | None = None
    last_status: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        self.agent = Agent(
            node_id="bench-agent",
            gossip_port=free_port(),
            http_port=free_port(),
            data_dir=self.root / "agent",
            peers=[],
            log_path=self.root / "agent.log",
            extra_args=[
                *("--statsd", f"127.0.0.1:{self.port}"),
                *(() if self.config is None else ("--config", self.config)),
            ],
        )
        self.agent.start()
        self.agent.wait_ready(30.0)

    def status(self) -> dict[str, Any]:
        assert self.agent is not None
        self.last_status = self.agent.request("GET", "/v1/status")
        return self.last_status

    def counted_lines(self) -> int:
        ingest = self.status()["ingest"]
        return int(ingest["lines_ok"]) + int(ingest["lines_rejected"])

    def drained(self) -> bool:
        return super().drained() and self.status()["statsd"]["queue_bytes"] == 0

    def apply_seconds(self) -> float:
        return float(self.status()["statsd"]["apply_cpu_seconds_total"])


@dataclass
class EtsyServer(Server):
    package: Path = Path()
    mgmt_port: int = 0

    def start(self) -> None:
        self.mgmt_port = free_port()
        config = self.root / "etsy.js"
        # No backend and a flush an hour away: counters only grow during the run.
        config.write_text(
            json.dumps(
                {
                    "port": self.port,
                    "address": "127.0.0.1",
                    "mgmt_port": self.mgmt_port,
                    "mgmt_address": "127.0.0.1",
                    "flushInterval": 3_600_000,
                    "backends": [],
                }
            )
        )
        with open(self.root / "etsy.log", "ab") as log:
            self.process = subprocess.Popen(
                ["node", str(self.package / "stats.js"), str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: self._query("health") is not None, 30.0, "etsy statsd")

    def _query(self, command: str) -> str | None:
        try:
            with socket.create_connection(("127.0.0.1", self.mgmt_port), timeout=10) as mgmt:
                mgmt.sendall(command.encode() + b"\n")
                answer = b""
                while not answer.endswith(b"END\n\n") and b"health:" not in answer:
                    chunk = mgmt.recv(1 << 16)
                    if not chunk:
                        break
                    answer += chunk
                return answer.decode()
        except OSError:
            return None

    def counted_lines(self) -> int:
        answer = self._query("counters") or ""
        found = re.search(r"'?statsd\.metrics_received'?: (\d+)", answer)
        if found is None:
            raise RuntimeError(f"etsy statsd: no metrics_received in {answer[:200]!r}")
        return int(found.group(1))


@dataclass
class CollectdServer(Server):
    binary: str = ""

    def start(self) -> None:
        config = self.root / "collectd.conf"
        config.write_text(
            f'Hostname "bench"\nFQDNLookup false\nInterval 3600\n'
            f'BaseDir "{self.root}"\nPIDFile "{self.root}/collectd.pid"\n'
            'TypesDB "/usr/share/collectd/types.db"\nLoadPlugin statsd\n'
            f'<Plugin statsd>\n  Host "127.0.0.1"\n  Port "{self.port}"\n</Plugin>\n'
        )
        with open(self.root / "collectd.log", "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-f", "-C", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_for(lambda: udp_socket_state(self.port) is not None, 30.0, "collectd")

    def counted_lines(self) -> None:
        return None


def wait_for(ready: Callable[[], bool], deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if ready():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready within {deadline_s} s")
