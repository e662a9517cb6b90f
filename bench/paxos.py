"""Paxos against Raft: durable writes, linearizable reads and the write stall when a node dies,
both backends on the same three agent processes.

Three ``crdtstream agent`` processes are Raft voters and Paxos acceptors on loopback over ZeroMQ,
with fsync on (Raft: its write-ahead log, one fsync per ``Ready``; Paxos: the acceptor file, one
fsync per ``Ready``). The policy sends ``bench.raft.*`` to Raft and ``bench.paxos.*`` to Paxos.
The load comes from a client :class:`~crdtstream.node.Node` in this process that is neither a
voter nor an acceptor: for Raft it forwards each request to a voter (which forwards to the
leader); for Paxos it forwards each operation to the key's preferred proposer (the first
acceptor of the key's rendezvous ranking), and proposes it itself when that one does not
answer in time.

- ``raft_durable_writes_per_s`` / ``paxos_durable_writes_per_s``: closed loop, ``--concurrency``
  writes (a counter ``add`` on one key) in flight, rounds alternating between the backends
  (``--rounds``, best round of each kept). Ratio ``paxos_vs_raft_writes`` (reported; what limits
  it is said in the README's Paxos section).
- ``paxos_linearizable_reads_per_s`` (and Raft's, for comparison): closed loop of reads with
  ``--read-concurrency`` in flight. A Paxos read is a full round (prepare and accept of the
  identity change), never a read of promises alone.
- ``raft_kill_stall_ms`` / ``paxos_kill_stall_ms``: the same closed-loop write load; after
  ``--kill-after`` seconds one node is SIGKILLed — for Raft the leader, for Paxos the key's
  preferred proposer (the worst acceptor to lose: every forward waits on it until the client
  node's forward timeout passes it over) — and the load runs ``--observe`` seconds more. The
  stall is the longest time without a successful write from the kill on. The node is restarted
  from its data directory before the next phase. Ratio ``paxos_vs_raft_kill_stall``, goal
  ``<= 0.5``.

Every process started here is killed on every path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from bench import processes
from bench.raft import (
    Operation,
    _closed_loop,
    _first_success,
    _positive,
    _wait_for_leader,
    client_node,
    reader,
)
from bench.report import Report
from crdtstream.paxos.node import proposer_ranking

if TYPE_CHECKING:
    from crdtstream.node import Node

__all__ = ["add_arguments", "run"]

NODES = ["p1", "p2", "p3"]
RAFT_KEY = "bench.raft.k"
PAXOS_KEY = "bench.paxos.k"
POLICIES = ("bench.raft.*=strong", "bench.paxos.*=strong/paxos")
KILL_STALL_GOAL = "<= 0.5"
WRITES_GOAL = ">= 1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crdtstream bench paxos``."""
    parser.add_argument(
        "--seconds", type=_positive(float), default=4.0, help="seconds of each load phase"
    )
    parser.add_argument("--concurrency", type=_positive(int), default=64)
    parser.add_argument("--read-concurrency", type=_positive(int), default=256)
    parser.add_argument("--rounds", type=_positive(int), default=2)
    parser.add_argument(
        "--kill-after", type=_positive(float), default=2.0, help="seconds of load before a kill"
    )
    parser.add_argument(
        "--observe", type=_positive(float), default=4.0, help="seconds of load after a kill"
    )
    parser.add_argument("--seed", type=int, default=1)


def run(args: argparse.Namespace) -> Report:
    """Start the three agents, measure both backends side by side, kill every process."""
    with (
        tempfile.TemporaryDirectory(prefix="crdtstream-bench-paxos-") as directory,
        contextlib.ExitStack() as stack,
    ):
        agents = processes.make_voters(Path(directory), NODES, POLICIES[0])
        for agent in agents:
            agent.extra_args += ["--policy", POLICIES[1]]
        stack.enter_context(processes.running(agents))
        _wait_for_leader(agents)
        figures = asyncio.run(_measure(agents, args))
    report = Report("paxos")
    for name, (value, unit) in figures.items():
        report.add(name, value, unit)
    raft_stall, paxos_stall = figures["raft_kill_stall_ms"][0], figures["paxos_kill_stall_ms"][0]
    report.ratio("paxos_vs_raft_kill_stall", paxos_stall / max(raft_stall, 1e-9), KILL_STALL_GOAL)
    raft_writes = figures["raft_durable_writes_per_s"][0]
    paxos_writes = figures["paxos_durable_writes_per_s"][0]
    report.ratio("paxos_vs_raft_writes", paxos_writes / max(raft_writes, 1e-9), WRITES_GOAL)
    return report


Figures = dict[str, tuple[float, str]]


async def _measure(agents: list[processes.Agent], args: argparse.Namespace) -> Figures:
    async with client_node(agents, args.seed, POLICIES) as node:
        writes = {backend: _writer(node, key) for backend, key in _KEYS.items()}
        reads = {backend: reader(node, key) for backend, key in _KEYS.items()}
        for backend in _KEYS:
            await _first_success(writes[backend])
        best: dict[str, float] = {}
        failed = 0
        round_s = args.seconds / args.rounds
        for _ in range(args.rounds):
            for backend in _KEYS:
                for what, operation, concurrency in (
                    ("durable_writes_per_s", writes[backend], args.concurrency),
                    ("linearizable_reads_per_s", reads[backend], args.read_concurrency),
                ):
                    result = await _closed_loop(operation, concurrency, round_s)
                    name = f"{backend}_{what}"
                    best[name] = max(best.get(name, 0.0), result.per_s)
                    failed += result.failed
        figures: Figures = {
            name: (value, "requests/s (client node over ZeroMQ, closed loop, fsync on)")
            for name, value in sorted(best.items())
        }
        for backend in _KEYS:
            stall_ms = await _kill_stall(agents, backend, writes[backend], args)
            figures[f"{backend}_kill_stall_ms"] = (
                stall_ms,
                "ms, longest gap between successful writes after a SIGKILL"
                + (" of the leader" if backend == "raft" else " of the key's proposer"),
            )
        figures["requests_failed"] = (float(failed), "requests (unavailable) in the rate phases")
    return figures


_KEYS = {"raft": RAFT_KEY, "paxos": PAXOS_KEY}


async def _kill_stall(
    agents: list[processes.Agent], backend: str, write: Operation, args: argparse.Namespace
) -> float:
    """Write load; SIGKILL a node (Raft: the leader) after ``kill_after`` s; the longest gap
    without a successful write from the kill to the end; restart the node."""
    loop = asyncio.get_running_loop()
    successes: list[float] = []
    end = loop.time() + args.kill_after + args.observe

    async def worker() -> None:
        while loop.time() < end:
            if await write() is True:
                successes.append(loop.time())

    workers = [asyncio.create_task(worker()) for _ in range(args.concurrency)]
    try:
        await asyncio.sleep(args.kill_after)
        if backend == "raft":
            victim = await asyncio.to_thread(_wait_for_leader, agents)
        else:
            leader = proposer_ranking(PAXOS_KEY, [agent.node_id for agent in agents])[0]
            victim = next(agent for agent in agents if agent.node_id == leader)
        killed_at = loop.time()
        await asyncio.to_thread(victim.kill)
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
    await asyncio.to_thread(_restart, agents, victim)
    times: list[float] = [killed_at, *sorted(t for t in successes if t >= killed_at), end]
    return max(later - earlier for earlier, later in itertools.pairwise(times)) * 1e3


def _restart(agents: list[processes.Agent], victim: processes.Agent) -> None:
    victim.start()
    victim.wait_ready(30.0)
    _wait_for_leader(agents)


def _writer(node: Node, key: str) -> Operation:
    from crdtstream.errors import RefusedError, UnavailableError

    async def write() -> bool | None:
        try:
            await node.write(key, "add", 1)
        except UnavailableError:
            return None
        except RefusedError:
            return False
        return True

    return write
