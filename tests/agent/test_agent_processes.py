"""Three real agent processes: JSON logs, /metrics over HTTP, and Graphite pushes made once.

The agents push to a recording TCP server in this process (one line per point, counted), and
log as JSON to their log files; one is killed with SIGKILL and the others log it.
"""

from __future__ import annotations

import json
import socketserver
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.processes import Agent, make_agents, running

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(120)]

DEADLINE_S = 40.0
KEYS = [f"e2e.k{index}" for index in range(12)]


class _Lines(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        lines = self.rfile.read().decode().splitlines()
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.lines += lines  # type: ignore[attr-defined]


@pytest.fixture
def recorder() -> Iterator[socketserver.ThreadingTCPServer]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Lines)
    server.daemon_threads = True
    server.lines = []  # type: ignore[attr-defined]
    server.lock = threading.Lock()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _agents(tmp_path: Path, graphite_port: int) -> list[Agent]:
    config = tmp_path / "agent.toml"
    config.write_text(
        "[window]\nsize_ms = 1000\nallowed_lateness_ms = 0\n"
        "[membership]\nprobe_interval_ms = 200\nprobe_timeout_ms = 100\n"
    )
    agents = make_agents(tmp_path, ["n1", "n2", "n3"])
    for agent in agents:
        agent.extra_args = [
            *("--config", str(config), "--log-format", "json"),
            *("--graphite", f"127.0.0.1:{graphite_port}"),
        ]
    return agents


def _log_events(agent: Agent) -> list[dict[str, object]]:
    events = []
    for line in agent.log_path.read_text().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


def _wait(condition: object, what: str) -> None:
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_agents_log_export_once_and_serve_metrics(
    tmp_path: Path, recorder: socketserver.ThreadingTCPServer
) -> None:
    with running(_agents(tmp_path, recorder.server_address[1])) as agents:
        started = [e for e in _log_events(agents[0]) if e["message"] == "agent started"]
        assert [e["node_id"] for e in started] == ["n1"]
        for index, key in enumerate(KEYS):
            agents[index % 3].request("POST", "/v1/ingest", f"{key}:2|c".encode())

        def exported() -> set[str]:
            with recorder.lock:  # type: ignore[attr-defined]
                return {line.split(" ")[0] for line in recorder.lines}  # type: ignore[attr-defined]

        _wait(lambda: exported() >= set(KEYS), "every key's window in Graphite")
        time.sleep(2.0)  # any duplicate would arrive within a couple of flushes
        with recorder.lock:  # type: ignore[attr-defined]
            lines = list(recorder.lines)  # type: ignore[attr-defined]
        points = Counter((line.split(" ")[0], line.split(" ")[2]) for line in lines)
        assert {point: n for point, n in points.items() if n > 1} == {}
        assert {float(line.split(" ")[1]) for line in lines} == {2.0}

        url = f"http://127.0.0.1:{agents[0].http_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        samples = {
            s.name: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if not s.labels
        }
        assert samples["e2e_k0_total"] == 2.0
        assert "crdtstream_export_points_sent_total" in samples
        assert samples["crdtstream_http_internal_errors_total"] == 0.0

        agents[2].kill()

        def n3_gone() -> bool:
            return any(
                e.get("member") == "n3" and e["message"] in ("member suspected", "member dead")
                for e in _log_events(agents[0])
            )

        _wait(n3_gone, "n1 to log that n3 is suspected or dead")
        agents[0].stop()  # SIGTERM: an orderly shutdown, logged
        messages = [e["message"] for e in _log_events(agents[0])]
        assert messages[-2:] == ["agent stopping", "agent stopped"]
