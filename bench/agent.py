"""The edge agent end to end: UDP statsd load against a running agent, Etsy statsd and collectd.

For each server and each datagram shape (``multi``: about 1,400 bytes of lines; ``single``: one
line per datagram) the load generator (``bench/_loadgen.py``, ``--senders`` processes) offers
stepped rates open loop for ``--step-seconds`` each. Per step: the lines the server counted
(the agent's ``/v1/status``; Etsy statsd's ``metrics_received`` from its management port;
collectd by the kernel's drop counter of its socket, as it keeps no count of its own), the loss
fraction against the lines sent, and the server's CPU µs per counted line (``/proc/<pid>/stat``).
The highest step with < 1 % loss is the server's max rate (one extra step halfway to the first
failing rate refines it). Two fixed moderate steps (25 k lines/s multi, 5 k single) give the CPU
per line at a rate every server sustains. For the agent, the event loop's lateness (p99 over
the step at its max rate) bounds how late gossip rounds, Raft heartbeats and HTTP run.

Anchors: Etsy statsd runs when ``node`` is on PATH and the npm package is found (``--etsy-statsd
DIR`` or ``CRDTSTREAM_ETSY_STATSD``, the directory holding ``stats.js``); collectd when its
binary is (``--collectd``, Debian ``collectd-core``). Otherwise their ratios are reported as
skipped. Anchors run with their shipped defaults (default receive buffer); the agent with its
own (8 MiB asked).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._loadgen import build_datagrams
from bench._statsd_servers import (
    AgentServer,
    CollectdServer,
    EtsyServer,
    Server,
    udp_socket_state,
    wait_for,
)
from bench.processes import cpu_seconds, free_port
from bench.report import Report

__all__ = ["add_arguments", "run"]

LOSS_MAX = 0.01
WARM_UP_LINES_PER_S = 50_000
FIXED_RATES = {"multi": 25_000, "single": 5_000}
"""Lines per second of the fixed CPU-per-line steps."""
MULTI_RATES = (200_000, 400_000, 800_000, 1_600_000, 3_200_000, 6_400_000)
SINGLE_RATES = (20_000, 40_000, 80_000, 160_000, 320_000, 640_000)
BUILD_S = 1.0
"""Time the senders get to build their datagrams before the step's clock starts."""
DRAIN_S_MAX = 5.0
SETTLE_S = 0.5
SENDER_SHORTFALL = 0.95
"""A step where the senders offered less than this share of the rate is sender-limited."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Rates, step length, senders and where the anchors are."""
    parser.add_argument("--step-seconds", type=float, default=1.5, help="seconds per step")
    parser.add_argument(
        "--fixed-step-seconds",
        type=float,
        default=5.0,
        help="seconds of the fixed-rate CPU steps (CPU time is counted in 10 ms ticks)",
    )
    parser.add_argument("--senders", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--multi-rates", default=",".join(map(str, MULTI_RATES)), help="lines/s steps, multi"
    )
    parser.add_argument(
        "--single-rates", default=",".join(map(str, SINGLE_RATES)), help="lines/s steps, single"
    )
    parser.add_argument(
        "--etsy-statsd",
        default=os.environ.get("CRDTSTREAM_ETSY_STATSD", "node_modules/statsd"),
        help="directory of the npm package statsd (holds stats.js)",
    )
    parser.add_argument(
        "--collectd", default=shutil.which("collectd") or "/usr/sbin/collectd", help="binary"
    )
    parser.add_argument(
        "--servers", default="agent,etsy,collectd", help="comma-separated subset to run"
    )
    parser.add_argument("--agent-config", help="a TOML file for the agent ([statsd] limits)")


# ---------------------------------------------------------------- steps


@dataclass(frozen=True)
class Step:
    """What one offered rate gave."""

    offered_lines_per_s: float
    sent_lines: int
    sent_datagrams: int
    sent_seconds: float
    counted_lines: float
    cpu_s: float
    loop_lag_ms_p99: float | None
    apply_s: float | None

    @property
    def loss(self) -> float:
        return 1.0 - self.counted_lines / self.sent_lines if self.sent_lines else 0.0

    @property
    def counted_lines_per_s(self) -> float:
        return self.counted_lines / self.sent_seconds

    @property
    def cpu_us_per_line(self) -> float:
        return self.cpu_s / max(self.counted_lines, 1.0) * 1e6

    @property
    def sender_limited(self) -> bool:
        offered = self.offered_lines_per_s * self.sent_seconds
        return self.sent_lines < SENDER_SHORTFALL * offered


def _lines_per_datagram(shape: str, dialect: str) -> float:
    sample = build_datagrams(shape, dialect, 99, 200)
    return sum(d.count(b"\n") + 1 for d in sample) / len(sample)


def _run_senders(
    server: Server,
    shape: str,
    dialect: str,
    lines_per_s: float,
    seconds: float,
    args: argparse.Namespace,
) -> tuple[list[dict[str, Any]], float]:
    """Start the senders, take the server's CPU when they start sending; their reports."""
    per_sender = lines_per_s / _lines_per_datagram(shape, dialect) / args.senders
    start_at = time.monotonic() + BUILD_S
    senders = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "bench._loadgen", "--port", str(server.port)),
                *("--rate", str(per_sender), "--seconds", str(seconds)),
                *("--shape", shape, "--dialect", dialect, "--seed", str(index + 1)),
                *("--start-at", str(start_at)),
            ],
            stdout=subprocess.PIPE,
        )
        for index in range(args.senders)
    ]
    try:
        time.sleep(max(0.0, start_at - time.monotonic()))
        cpu_start = cpu_seconds({"s": server.pid}).get("s", 0.0)
        reports = []
        for sender in senders:
            out, _ = sender.communicate(timeout=seconds + BUILD_S + 60)
            reports.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for sender in senders:
            if sender.poll() is None:
                sender.kill()
                sender.wait(timeout=10)
    return reports, cpu_start


def _run_step(
    server: Server,
    shape: str,
    dialect: str,
    lines_per_s: float,
    args: argparse.Namespace,
    seconds: float | None = None,
) -> Step:
    counted_before = server.counted_lines()
    drops_before = (udp_socket_state(server.port) or (0, 0))[1]
    apply_before = server.apply_seconds()
    duration = args.step_seconds if seconds is None else seconds
    reports, cpu_start = _run_senders(server, shape, dialect, lines_per_s, duration, args)
    # The CPU is read before any question to the server (a status page, a management dump):
    # once the kernel queue is empty and a settle time has let a queued batch be applied.
    wait_for(lambda: Server.drained(server), DRAIN_S_MAX, f"{server.name} socket drain")
    time.sleep(SETTLE_S)
    cpu_s = cpu_seconds({"s": server.pid}).get("s", 0.0) - cpu_start
    lag = None
    if isinstance(server, AgentServer):
        lag = float(server.status()["statsd"]["event_loop_lag_ms"]["p99"])
    wait_for(server.drained, DRAIN_S_MAX, f"{server.name} drain")
    sent_lines = sum(int(r["lines"]) for r in reports)
    sent_datagrams = sum(int(r["datagrams"]) for r in reports)
    sent_s = max(float(r["seconds"]) for r in reports)
    counted_after = server.counted_lines()
    if counted_before is None or counted_after is None:
        drops = (udp_socket_state(server.port) or (0, 0))[1] - drops_before
        counted = sent_lines * (1.0 - drops / max(sent_datagrams, 1))
    else:
        counted = float(counted_after - counted_before)
    apply_after = server.apply_seconds()
    apply_s = None if apply_before is None or apply_after is None else apply_after - apply_before
    return Step(lines_per_s, sent_lines, sent_datagrams, sent_s, counted, cpu_s, lag, apply_s)


def _ladder(
    server: Server, shape: str, dialect: str, rates: list[int], args: argparse.Namespace
) -> tuple[Step | None, list[Step]]:
    """Steps up the rates until loss reaches 1 %, one refining step; the best passing step."""
    steps: list[Step] = []
    best: Step | None = None
    for rate in rates:
        step = _run_step(server, shape, dialect, rate, args)
        steps.append(step)
        _print_step(server.name, shape, step)
        if step.loss < LOSS_MAX:
            best = step
            if step.sender_limited:
                break  # the senders could not offer more: the max is at least this
            continue
        lower = 0.0 if best is None else best.offered_lines_per_s
        middle = (lower + rate) / 2
        if middle > 0:
            refined = _run_step(server, shape, dialect, middle, args)
            steps.append(refined)
            _print_step(server.name, shape, refined)
            if refined.loss < LOSS_MAX:
                best = refined
        break
    return best, steps


def _print_step(name: str, shape: str, step: Step) -> None:
    lag = "" if step.loop_lag_ms_p99 is None else f" loop lag p99 {step.loop_lag_ms_p99:.1f} ms"
    print(
        f"# {name} {shape}: offered {step.offered_lines_per_s:,.0f} lines/s, counted "
        f"{step.counted_lines_per_s:,.0f} lines/s, loss {step.loss:.2%}, "
        f"{step.cpu_us_per_line:.2f} CPU µs/line{lag}"
        + (" (sender-limited)" if step.sender_limited else ""),
        file=sys.stderr,
        flush=True,
    )


# ---------------------------------------------------------------- the suite


def _servers(args: argparse.Namespace, root: Path, report: Report) -> list[Server]:
    wanted = set(args.servers.split(","))
    servers: list[Server] = []
    if "agent" in wanted:
        port = free_port(socket.SOCK_DGRAM)
        servers.append(AgentServer("agent", port, root, config=args.agent_config))
    package = Path(args.etsy_statsd)
    if "etsy" in wanted:
        if shutil.which("node") and (package / "stats.js").exists():
            servers.append(
                EtsyServer("etsy", free_port(socket.SOCK_DGRAM), root, package=package.resolve())
            )
        else:
            print(f"# etsy statsd skipped: node or {package}/stats.js missing", file=sys.stderr)
            report.add("etsy_skipped", 1, "1 = node or the npm package statsd not found")
    if "collectd" in wanted:
        if Path(args.collectd).exists():
            servers.append(
                CollectdServer("collectd", free_port(socket.SOCK_DGRAM), root, binary=args.collectd)
            )
        else:
            print(f"# collectd skipped: {args.collectd} missing", file=sys.stderr)
            report.add("collectd_skipped", 1, "1 = collectd binary not found")
    return servers


_DIALECTS = {"agent": "dogstatsd", "etsy": "etsy", "collectd": "collectd"}


def _measure(server: Server, args: argparse.Namespace, report: Report) -> dict[str, Step | None]:
    """Every step of one server; its results added to ``report``; the best steps by shape."""
    dialect = _DIALECTS[server.name]
    best: dict[str, Step | None] = {}
    server.start()
    try:
        # Every key seen once first, untimed: the steps measure a server in its steady state,
        # not its first sight of 10,000 keys.
        _run_step(server, "multi", dialect, WARM_UP_LINES_PER_S, args)
        for shape in ("multi", "single"):
            fixed = _run_step(
                server, shape, dialect, FIXED_RATES[shape], args, args.fixed_step_seconds
            )
            _print_step(server.name, shape, fixed)
            rates = [int(r) for r in getattr(args, f"{shape}_rates").split(",")]
            best[shape], _ = _ladder(server, shape, dialect, rates, args)
            prefix = f"{server.name}_{shape}"
            report.add(
                f"{prefix}_cpu_us_per_line_at_{FIXED_RATES[shape] // 1000}k",
                fixed.cpu_us_per_line,
                f"CPU µs per line at {FIXED_RATES[shape]:,} lines/s",
            )
            report.add(f"{prefix}_loss_at_{FIXED_RATES[shape] // 1000}k", fixed.loss, "fraction")
            top = best[shape]
            report.add(
                f"{prefix}_max_lines_per_s",
                0.0 if top is None else top.counted_lines_per_s,
                "lines/s counted at the highest step with < 1 % loss",
            )
            if top is not None:
                report.add(f"{prefix}_max_cpu_us_per_line", top.cpu_us_per_line, "CPU µs/line")
                report.add(
                    f"{prefix}_max_sender_limited",
                    float(top.sender_limited),
                    "1 = the senders could not offer more: the max is a lower bound",
                )
                if top.apply_s is not None and top.cpu_s > 0:
                    report.add(
                        f"{prefix}_max_apply_share_of_cpu",
                        top.apply_s / top.cpu_s,
                        "parse+apply on the loop thread / process CPU (the rest: reader, pump)",
                    )
                if top.loop_lag_ms_p99 is not None:
                    report.add(
                        f"{prefix}_max_event_loop_lag_ms_p99",
                        top.loop_lag_ms_p99,
                        "ms a timer (gossip round, Raft heartbeat) ran late, p99",
                    )
        if isinstance(server, AgentServer):
            _report_agent_status(server, report)
    finally:
        server.stop()
    return best


def _report_agent_status(server: AgentServer, report: Report) -> None:
    try:
        section = server.status()["statsd"]
    except (urllib.error.URLError, OSError):
        return
    report.add(
        "agent_receive_buffer_bytes_granted",
        section["receive_buffer_bytes_granted"],
        "bytes (SO_RCVBUF as the kernel reports it)",
    )
    report.add("agent_apply_ms_p99", section["apply_ms"]["p99"], "ms per parse+apply call")


def _ratios(results: dict[str, dict[str, Step | None]], report: Report) -> None:
    agent = results.get("agent")
    if agent is None:
        return
    goals = {
        ("etsy", "multi"): ">= 3",
        ("etsy", "single"): ">= 2",
        ("collectd", "multi"): ">= 1",
    }
    for (anchor, shape), goal in goals.items():
        theirs, ours = results.get(anchor, {}).get(shape), agent.get(shape)
        if theirs is None or ours is None:
            continue
        report.ratio(
            f"agent_vs_{anchor}_max_rate_{shape}",
            ours.counted_lines_per_s / theirs.counted_lines_per_s,
            goal,
        )
    theirs, ours = results.get("collectd", {}).get("single"), agent.get("single")
    if theirs is not None and ours is not None:
        report.add(
            "agent_vs_collectd_max_rate_single",
            ours.counted_lines_per_s / theirs.counted_lines_per_s,
            "ratio (no goal)",
        )


def _cpu_ratios(report: Report) -> None:
    """Agent CPU per line over Etsy statsd's at the fixed rates (goal: at most theirs), and
    over collectd's (reported, no goal)."""
    values = {r.name: r.value for r in report.results}
    for shape, rate in FIXED_RATES.items():
        suffix = f"{shape}_cpu_us_per_line_at_{rate // 1000}k"
        ours = values.get(f"agent_{suffix}")
        etsy, collectd = values.get(f"etsy_{suffix}"), values.get(f"collectd_{suffix}")
        if ours is not None and etsy:
            report.ratio(f"agent_vs_etsy_cpu_per_line_{shape}", ours / etsy, "<= 1")
        if ours is not None and collectd:
            report.add(f"agent_vs_collectd_cpu_per_line_{shape}", ours / collectd, "ratio")


def run(args: argparse.Namespace) -> Report:
    """Run every server through both shapes; the report with max rates and ratios."""
    report = Report("agent")
    results: dict[str, dict[str, Step | None]] = {}
    with tempfile.TemporaryDirectory(prefix="crdtstream-bench-agent-") as directory:
        root = Path(directory)
        for server in _servers(args, root, report):
            results[server.name] = _measure(server, args, report)
    _ratios(results, report)
    _cpu_ratios(report)
    report.add("load_average_1m", os.getloadavg()[0], "at the end of the run (shared machine?)")
    return report
