"""Raft: durable writes, commit latency and linearizable reads of three voter processes, with etcd
as the anchor.

Three ``crdtstream agent`` processes are Raft voters on loopback over ZeroMQ, each with its own
write-ahead log on disk (fsync on, one fsync per ``Ready``: group commit). The load comes from a
client :class:`~crdtstream.node.Node` in this process that is not a voter: it joins the cluster
over gossip and sends every strong request to a voter picked at random, which forwards it to the
leader; the answer comes back once the write is committed and applied (or the read is served
through ReadIndex). That is the path every non-voter node of a deployment takes.

- ``durable_writes_per_s``: closed loop, ``--concurrency`` coroutines each awaiting
  ``Node.write`` (a counter ``add`` on one strong key) back to back. All of them share the client
  node's one session; the driver holds back a write that is 64 or more sequences ahead of the
  session's oldest unfinished one (the state machine deduplicates within 64 results), so any
  concurrency is safe. A write refused after commit (``ok`` False) would be counted in
  ``writes_refused``, never as throughput.
- ``commit_latency_ms_p50`` / ``_p99``: open loop at ``--rate`` writes/s, each write started at
  its scheduled time whatever happened to the previous ones; latency counts from the scheduled
  start, so a stall shows in the figures instead of lowering the offered load.
- ``linearizable_reads_per_s``: closed loop of ``Node.read`` on the same key with
  ``--read-concurrency`` in flight; reads waiting together at a voter share one ReadIndex round.
  Ratio ``linearizable_reads_vs_goal`` against the goal of 10,000 reads/s.
- etcd anchor, when ``etcd`` is on PATH: three members on loopback (free ports, temporary data
  directories, fsync on as always in etcd), the same closed-loop write load through etcd's
  HTTP/JSON gateway (``POST /v3/kv/put``) from an aiohttp client with the same concurrency,
  requests spread over the three members as ours are. Ratio ``writes_vs_etcd``, goal >= 2.
  Without etcd the anchor is reported as skipped (``etcd_anchor_skipped`` = 1).

Both clusters run for the whole measurement; rounds of our writes, etcd's writes and our reads
follow each other (``--rounds``, the best round of each kept), so a burst of load from elsewhere
on the machine hits all of them alike. The latency phase comes last. Where ``/proc`` exists, the
CPU time each side's processes spent per request in its best round is reported too
(``*_cpu_us_per_write``, ``*_per_read``), and ``leader_messages_per_write`` / ``_per_read``
count the frames the leader received and sent per request: they say where the time goes, and
they depend far less than a rate on what else the machine is running.

The load client and the etcd client share this one process, so both sides pay the same kind of
client cost: one Python event loop. Every process started here is killed on every path.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import itertools
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import processes
from bench.report import Report

if TYPE_CHECKING:
    from crdtstream.node import Node

__all__ = ["add_arguments", "run"]

VOTERS = ["v1", "v2", "v3"]
ETCD_MEMBERS = ["m1", "m2", "m3"]
POLICY = "bench.*=strong"
KEY = "bench.k"
READS_GOAL_PER_S = 10_000
WRITES_VS_ETCD_GOAL = ">= 2"
LEADER_DEADLINE_S = 30.0
ETCD_REQUEST_TIMEOUT_S = 10.0
RATE_UNITS = {
    "durable_writes_per_s": "writes/s (non-voter node over ZeroMQ, closed loop)",
    "linearizable_reads_per_s": "reads/s (non-voter node, ReadIndex, closed loop)",
    "etcd_writes_per_s": "writes/s (aiohttp to /v3/kv/put, closed loop)",
}
WARMUP_FRACTION = 0.2
"""The first part of each closed-loop phase is not counted: queues fill, batches settle."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crdtstream bench raft``."""
    parser.add_argument(
        "--seconds",
        type=_positive(float),
        default=10.0,
        help="seconds of each kind of load: our writes, etcd's writes, reads, latency (default 10)",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive(int),
        default=64,
        help="writes in flight, ours and etcd's alike (default 64)",
    )
    parser.add_argument(
        "--read-concurrency", type=_positive(int), default=512, help="reads in flight (default 512)"
    )
    parser.add_argument(
        "--rate", type=_positive(int), default=1_000, help="offered writes/s of the latency phase"
    )
    parser.add_argument(
        "--rounds",
        type=_positive(int),
        default=3,
        help="rounds of our writes, etcd's writes and our reads in turn; the best of each is kept",
    )
    parser.add_argument(
        "--no-etcd", action="store_true", help="skip the etcd anchor even if etcd is installed"
    )
    parser.add_argument("--seed", type=int, default=1)


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
        return value

    return parse


def run(args: argparse.Namespace) -> Report:
    """Start the voters (and etcd), measure side by side, kill every process; one report."""
    etcd = None if args.no_etcd else shutil.which("etcd")
    if etcd is None:
        reason = "--no-etcd" if args.no_etcd else "etcd is not on PATH"
        print(f"bench raft: {reason}, the etcd anchor is skipped", file=sys.stderr)
    # The stack exits before the directory goes: every process is dead before its files are.
    with (
        tempfile.TemporaryDirectory(prefix="crdtstream-bench-raft-") as directory,
        contextlib.ExitStack() as stack,
    ):
        root = Path(directory)
        agents = processes.make_voters(root, VOTERS, POLICY)
        stack.enter_context(processes.running(agents))
        members: list[processes.EtcdMember] = []
        if etcd is not None:
            (root / "etcd").mkdir()
            members = processes.make_etcd_members(root / "etcd", ETCD_MEMBERS, etcd)
            stack.enter_context(processes.etcd_running(members))
        _wait_for_leader(agents)
        figures = asyncio.run(_measure(agents, members, args))
    return _report(figures, etcd is not None)


def _report(figures: Figures, with_etcd: bool) -> Report:
    report = Report("raft")
    for name, (value, unit) in figures.items():
        report.add(name, value, unit)
    reads_per_s = figures["linearizable_reads_per_s"][0]
    report.ratio("linearizable_reads_vs_goal", reads_per_s / READS_GOAL_PER_S, ">= 1")
    report.add("etcd_anchor_skipped", 0.0 if with_etcd else 1.0, "bool (1: no etcd run)")
    if with_etcd:
        ours, theirs = figures["durable_writes_per_s"][0], figures["etcd_writes_per_s"][0]
        report.ratio("writes_vs_etcd", ours / max(theirs, 1e-9), WRITES_VS_ETCD_GOAL)
    return report


Figures = dict[str, tuple[float, str]]


def _wait_for_leader(agents: list[processes.Agent]) -> processes.Agent:
    deadline = time.monotonic() + LEADER_DEADLINE_S
    while time.monotonic() < deadline:
        leader = _leader(agents)
        if leader is not None:
            return leader
        time.sleep(0.1)
    raise TimeoutError(f"bench raft: no leader among the voters within {LEADER_DEADLINE_S} s")


def _leader(agents: list[processes.Agent]) -> processes.Agent | None:
    for agent in agents:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            if agent.request("GET", "/v1/status")["raft"]["role"] == "leader":
                return agent
    return None


def _highest_term(agents: list[processes.Agent]) -> int:
    terms = [0]
    for agent in agents:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            terms.append(int(agent.request("GET", "/v1/status")["raft"]["term"]))
    return max(terms)


# ---------------------------------------------------------------------- the phases


async def _measure(
    agents: list[processes.Agent], members: list[processes.EtcdMember], args: argparse.Namespace
) -> Figures:
    """Rounds of our writes, etcd's writes and our reads in turn (the best round of each is
    kept), then the open-loop latency phase."""
    async with client_node(agents, args.seed, [POLICY]) as node, _etcd_client(members, args) as put:
        write, refused = _writer(node)
        read = reader(node, KEY)
        await _first_success(write)
        if put is not None:
            await _first_success(put)
        term_before = _highest_term(agents)
        leader = _wait_for_leader(agents)
        voters = {"leader": _pid(leader)}
        voters |= {agent.node_id: _pid(agent) for agent in agents if agent is not leader}
        messages = functools.partial(_leader_messages, leader)
        writes, reads = _Meter(voters, messages), _Meter(voters, messages)
        theirs = _Meter({member.name: member.pid for member in members})
        round_s = args.seconds / args.rounds
        for _ in range(args.rounds):
            await writes.round(write, args.concurrency, round_s)
            if put is not None:
                await theirs.round(put, args.concurrency, round_s)
            await reads.round(read, args.read_concurrency, round_s)
        latency = await _open_loop(write, args.rate, args.seconds)
        elections = _highest_term(agents) - term_before
    figures = writes.figures("durable_writes_per_s", "voters", "write")
    rate = f"ms (open loop, {args.rate} writes/s offered)"
    figures["commit_latency_ms_p50"] = (latency.percentile(50), rate)
    figures["commit_latency_ms_p99"] = (latency.percentile(99), rate)
    figures.update(reads.figures("linearizable_reads_per_s", "voters", "read"))
    failed = writes.failed + latency.failed + reads.failed
    figures["requests_failed"] = (float(failed), "requests (unavailable, or refused)")
    figures["writes_refused"] = (float(refused[0]), "writes (applied with ok=False)")
    figures["raft_term_changes"] = (float(elections), "terms (elections during the run)")
    if put is not None:
        figures.update(theirs.figures("etcd_writes_per_s", "etcd_members", "write"))
    return figures


def _leader_messages(leader: processes.Agent) -> int:
    """Frames the leader has received and sent so far (0 when it does not answer)."""
    try:
        counters = leader.request("GET", "/v1/status")["node"]
        return int(counters["packets_received"]) + int(counters["frames_sent"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _pid(agent: processes.Agent) -> int:
    return 0 if agent.process is None else agent.process.pid


def _writer(node: Node) -> tuple[Operation, list[int]]:
    """A counter add on :data:`KEY`. A result with ``ok`` False went through the log but was
    refused (a sequence too far behind its session's newest): not a success, counted in the
    list."""
    from crdtstream.errors import RefusedError, UnavailableError

    refused = [0]

    async def write() -> bool | None:
        try:
            await node.write(KEY, "add", 1)
        except UnavailableError:
            return None
        except RefusedError:
            refused[0] += 1
            return False
        return True

    return write, refused


def reader(node: Node, key: str) -> Operation:
    """A read of ``key`` at its own consistency: True when answered, None when unavailable."""
    from crdtstream.errors import UnavailableError

    async def read() -> bool | None:
        try:
            await node.read(key)
        except UnavailableError:
            return None
        return True

    return read


@contextlib.asynccontextmanager
async def client_node(
    agents: list[processes.Agent], seed: int, policy: Sequence[str]
) -> AsyncIterator[Node]:
    """A non-voter node that knows the voters (as gossip seeds and as Raft voters), running,
    with the ``policy`` rules (``PATTERN=MODE`` strings, as ``--policy`` takes them)."""
    from crdtstream.agent.settings import parse_policy
    from crdtstream.clock import SystemClock
    from crdtstream.node import Node
    from crdtstream.node.config import NodeConfig, PeerAddress
    from transports.zeromq import ZmqTransport

    voters = tuple(PeerAddress(agent.node_id, agent.gossip_address) for agent in agents)
    config = NodeConfig(
        node_id="bench-client",
        listen_address=f"tcp://127.0.0.1:{processes.free_port()}",
        peers=voters,
        raft_voters=voters,
        policy=parse_policy(list(policy)),
    )
    transport = ZmqTransport(config.node_id, config.listen_address, config.transport)
    try:
        node = Node(config, transport, SystemClock(), random.Random(seed))
    except BaseException:
        transport.close()
        raise
    stop = asyncio.Event()
    driver = asyncio.create_task(node.run(stop))
    try:
        yield node
    finally:
        stop.set()
        await driver


@contextlib.asynccontextmanager
async def _etcd_client(
    members: list[processes.EtcdMember], args: argparse.Namespace
) -> AsyncIterator[Operation | None]:
    """A put of :data:`KEY` through etcd's JSON gateway, members taken in turn (None without
    members)."""
    if not members:
        yield None
        return
    import aiohttp

    urls = [f"{member.client_url}/v3/kv/put" for member in members]
    body = {"key": base64.b64encode(KEY.encode()).decode(), "value": "MQ=="}  # "1"
    turn = itertools.count()
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=ETCD_REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def put() -> bool | None:
            try:
                async with session.post(urls[next(turn) % len(urls)], json=body) as response:
                    await response.read()
                    return True if response.status == 200 else None
            except (aiohttp.ClientError, TimeoutError):
                return None

        yield put


class _Meter:
    """Closed-loop rounds of one operation: the best rate, the failures of every round, and the
    CPU time each server process (``pids``) and this client spent per success in the best."""

    def __init__(self, pids: dict[str, int], messages: Callable[[], int] | None = None) -> None:
        self.pids = {**pids, "client": os.getpid()}
        self.messages = messages
        self.best_messages = 0
        self.best = Throughput(0.0, 0, 0)
        self.best_cpu_s: dict[str, float] = {}
        self.failed = 0

    async def round(self, operation: Operation, concurrency: int, seconds: float) -> None:
        messages_before = 0 if self.messages is None else self.messages()
        before = processes.cpu_seconds(self.pids)
        result = await _closed_loop(operation, concurrency, seconds)
        after = processes.cpu_seconds(self.pids)
        messages = 0 if self.messages is None else self.messages() - messages_before
        self.failed += result.failed
        if result.per_s >= self.best.per_s:
            self.best = result
            self.best_cpu_s = {name: after[name] - before[name] for name in after}
            self.best_messages = messages

    def figures(self, rate_name: str, servers: str, per: str) -> Figures:
        """The best rate as ``rate_name``, and ``{servers}_cpu_us_per_{per}`` (all server
        processes), ``leader_…`` (when one is named) and ``client_…`` (this process)."""
        unit = RATE_UNITS[rate_name]
        figures: Figures = {rate_name: (self.best.per_s, unit)}
        if self.messages is not None and self.best.completed:
            per_request = self.best_messages / (self.best.completed + self.best.failed)
            figures[f"leader_messages_per_{per}"] = (per_request, "frames received + sent")
        if not self.best_cpu_s or self.best.completed == 0:
            return figures  # no /proc here: CPU time is not measured
        cpu_us = {k: v * 1e6 / self.best.completed for k, v in self.best_cpu_s.items()}
        total_us = sum(v for k, v in cpu_us.items() if k != "client")
        prefix = "etcd_" if servers.startswith("etcd") else ""
        figures[f"{servers}_cpu_us_per_{per}"] = (total_us, "us CPU, all server processes")
        if "leader" in cpu_us:
            figures[f"leader_cpu_us_per_{per}"] = (cpu_us["leader"], "us CPU")
        figures[f"{prefix}client_cpu_us_per_{per}"] = (cpu_us["client"], "us CPU, this process")
        return figures


# ---------------------------------------------------------------------- load shapes


Operation = Callable[[], Awaitable[bool | None]]
"""One request, which never raises: True once it succeeded; False when it was answered after
commit but refused (it counts for latency, not for throughput); None when it failed."""


@dataclass(frozen=True, slots=True)
class Throughput:
    """Successes per second in the measured part of a closed-loop phase, and the failures."""

    per_s: float
    failed: int
    completed: int
    """Successes over the whole phase, warm-up included (the span CPU time is measured over)."""


@dataclass(frozen=True, slots=True)
class Latencies:
    """Latencies in ms of the answered requests of an open-loop phase (refusals included: they
    were committed), and the requests that did not succeed."""

    latencies_ms: list[float]
    failed: int

    def percentile(self, percent: float) -> float:
        """The ``percent`` percentile in ms (NaN without any success)."""
        import numpy as np

        if not self.latencies_ms:
            return float("nan")
        return float(np.percentile(np.asarray(self.latencies_ms), percent))


async def _first_success(operation: Operation) -> None:
    """Retry until one request succeeds: the client has joined and a leader has been found."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LEADER_DEADLINE_S
    while loop.time() < deadline:
        if await operation() is True:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"bench raft: no request succeeded within {LEADER_DEADLINE_S} s")


async def _closed_loop(operation: Operation, concurrency: int, seconds: float) -> Throughput:
    """``concurrency`` workers each issue ``operation`` back to back for ``seconds``; the first
    :data:`WARMUP_FRACTION` of the time is not counted."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    counts = [0, 0]  # successes, failures

    async def worker() -> None:
        while loop.time() < end:
            counts[0 if await operation() is True else 1] += 1

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        await asyncio.sleep(seconds * WARMUP_FRACTION)
        start_successes, start_s = counts[0], loop.time()
        await asyncio.sleep(max(0.0, end - loop.time()))
        successes, elapsed_s = counts[0] - start_successes, loop.time() - start_s
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
    return Throughput(successes / max(elapsed_s, 1e-9), counts[1], counts[0])


async def _open_loop(operation: Operation, rate_per_s: int, seconds: float) -> Latencies:
    """Start ``operation`` on a fixed schedule of ``rate_per_s`` whatever the earlier ones do;
    each latency counts from the scheduled start (no coordinated omission)."""
    loop = asyncio.get_running_loop()
    latencies_ms: list[float] = []
    failures = [0]

    async def timed(scheduled_s: float) -> None:
        outcome = await operation()
        if outcome is not None:
            latencies_ms.append((loop.time() - scheduled_s) * 1000.0)
        if outcome is not True:
            failures[0] += 1

    total = max(1, int(rate_per_s * seconds))
    start_s = loop.time()
    tasks: list[asyncio.Task[None]] = []
    try:
        for number in range(total):
            scheduled_s = start_s + number / rate_per_s
            delay_s = scheduled_s - loop.time()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            tasks.append(asyncio.create_task(timed(scheduled_s)))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    return Latencies(latencies_ms, failures[0])
