"""The consistency modes on a real cluster with WAN latency and a partition: what each costs, what
each promises.

Three ``crdtstream agent`` processes (``--nodes``, up to 7), all Raft voters, run behind the
fault proxies of :mod:`bench.cluster`: every byte between two nodes crosses a userspace proxy
that adds the ``--profile``'s one-way latency and jitter (``lan`` 0.2 ms round trip, ``region``
5 ms, ``wan`` 40 ms) and cuts links on command. Keys ``ev.*`` are eventual, ``qu.*`` quorum,
``st.*`` strong through the Raft log, ``px.*`` strong through per-key Paxos (the ``paxos``
column) and ``bd.*`` bounded (the ``bounded`` column: writes are ``consume``, ``bd.quota`` has
``--quota-limit`` per window, the other ``bd.*`` keys a limit never reached, all split over
every node; the rules are ``[[policy]]`` tables in each agent's settings file); the client
(this process) reaches every node directly over HTTP, as a client next to each node would.
Each mode runs in turn on the same cluster, in four parts:

1. **Phases** steady -> partition -> heal (``--seconds`` in all, a third each), under an
   *open-loop* load of ``--rate`` requests/s: each request starts at its scheduled time
   whatever the earlier ones did, and its latency counts from that time, so a stall shows
   instead of lowering the load. Requests alternate between counter adds and reads of one key,
   spread over every node. The partition cuts node ``n1`` off (``--partition isolate``, a
   minority of one) or the largest minority ``n1``... (``minority``). A read of a
   quorum or strong key that returns less than the number of adds acknowledged before it started
   is *stale*: a broken promise.
2. **Quota**, during the partition: clients on both sides race to add 1 to a counter up to
   ``--quota-limit``; strong keys use ``conditional_add`` (the limit checked in the Raft log),
   eventual and quorum keys a read-then-add check by the client (all they offer). The overshoot
   is how far the healed, converged value passed the limit (strong must be 0). The limit
   holds per window, as ``conditional_add`` keeps it. Bounded keys ``consume`` on both sides
   until the race ends (a refusal, HTTP 400 ``no_rights``, is unavailability, not an error);
   the overshoot counts every acknowledged consume beyond the limit (must be 0), and the
   minority must spend the rights it holds (``bounded_minority_share_used`` >= 1). A node
   grants itself its share of a window only if it started before the window opened, so the
   bounded windows are short (whole seconds, at least two phases) and the bounded mode waits
   until its steady phase starts in a window opened after every agent started and its
   partition phase just after a window boundary; the race stops before that window ends.
3. **Convergence after heal**: adds made on both sides during the partition; the time from the
   heal until every node reports the same value, at least every acknowledged add.
4. **t-visibility** (PBS-style), on the healed cluster: ``--trials`` adds, each acknowledged at
   one node and then read at another ``d`` ms after the acknowledgement for every ``d`` of
   :data:`PROBE_DELAYS_MS`; the curve is the fraction of reads that saw the add, and
   ``{mode}_t_visibility_ms_p99`` the first delay at which at least 99 % did. Last, a write-only
   burst at the offered rate measures the bytes every proxy carried per acknowledged write, net
   of the idle traffic (membership probes, Raft heartbeats) measured just before.

Figures per mode: ``{mode}_write_ms_p50`` / ``_p99`` / ``_p999`` (steady phase),
``{mode}_read_ms_p50`` / ``_p99``, ``{mode}_{phase}_ok_per_s``, ``{mode}_partition_write_ms_p99``
and ``{mode}_heal_write_ms_p99`` (refusals included), ``{mode}_t_visibility_ms_p99``,
``{mode}_visible_at_ack``, ``{mode}_stale_reads``, ``{mode}_available_on_minority`` /
``_on_majority`` (fraction of the writes started at each side during the partition that were
acknowledged before the heal),
``{mode}_quota_overshoot``, ``{mode}_bytes_per_write``, ``{mode}_converge_after_heal_ms``.
Promises (the command exits 1 when one breaks): quorum, strong and etcd never stale and
visible at once after an acknowledgement, never acknowledged on a minority; strong, etcd and
bounded quota overshoot 0; eventual and bounded available on the minority (bounded: the
``bd.load`` key, whose rights never run out), and the bounded minority spends its share of the
quota. For the bounded column, reads are one node's lower bound of the consumption, spread by
gossip: stale reads and visibility are measured as for eventual, not promised (the JSON
parameters' ``figures_differ`` says so).

**The etcd anchor** (``etcd`` column), when ``etcd`` is on PATH: after the other columns, a
cluster of as many etcd members (:mod:`bench.etcd_cluster`, with ``--pre-vote``) starts on free
loopback ports, its peer links through the same kind of fault proxies, and the strong workload
runs on it: an add is a linearizable read and a transaction that puts the sum if the key's
``mod_revision`` is unchanged (retried on a conflict), a read is a linearizable range read
(serializable, the member's own state, when convergence is checked), the quota a transaction
comparing the value read; all through etcd's v3 HTTP/JSON gateway, each request given up after
``--timeout-ms`` as our nodes refuse after it. Figures are named ``etcd_*``. Without etcd the
JSON parameters say ``"etcd": "skipped: etcd not installed"`` and ``etcd_skipped`` is 1.

``--json`` adds every parameter and the environment (cores, versions); ``--plots DIR`` writes
PNGs (latency over time with the partition shaded, latency CDFs, t-visibility curves,
throughput per phase). A progress line goes to stderr while it runs. Every process and proxy
started is stopped on every path, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.cluster import NODES_MAX, PROFILES, Cluster, LinkShape
from bench.etcd_cluster import EtcdClient, EtcdCluster
from bench.report import Report

__all__ = ["MODES", "PROBE_DELAYS_MS", "add_arguments", "run"]

MODES = ("eventual", "quorum", "strong", "paxos", "bounded", "etcd")
"""``paxos`` is the strong mode with the per-key CASPaxos backend instead of the Raft log;
``bounded`` the escrow quota; ``etcd`` the strong workload on an etcd cluster (the anchor)."""
PREFIX = {"eventual": "ev", "quorum": "qu", "strong": "st", "paxos": "px", "bounded": "bd"}
PREFIX["etcd"] = "etcd"
STRONG = ("strong", "paxos", "etcd")
"""The modes whose keys are linearizable (either backend of the strong mode, and etcd)."""
BOUNDED_LOAD_LIMIT = 1_000_000_000
"""The limit of the bounded keys other than the quota: never reached, so that only rights held
decide whether a node answers."""
NOT_APPLICABLE = {
    "bounded": {
        "stale_reads": "a bounded read is this node's lower bound of the consumption, as an "
        "eventual read is: counted, not promised",
        "visible_at_ack": "spread by gossip like eventual: measured, not promised",
    },
    "etcd": {
        "converge_after_heal_ms": "serializable reads at every member: until the cut-off "
        "member's own state caught up",
    },
}
"""Figures reported for every column whose meaning differs for one (in the JSON parameters)."""
ETCD_SKIPPED = "skipped: etcd not installed"
PHASES = ("steady", "partition", "heal")
PROBE_DELAYS_MS = (0, 2, 5, 10, 20, 40, 80, 160, 320, 640, 1280)
VISIBILITY_GOAL = 0.99
PARTITIONS = ("isolate", "minority")
ALIGNMENT_MARGIN_S = 0.1
"""How long after a window boundary the bounded quota race starts."""
QUOTA_WINDOW_MARGIN_S = 1.5
"""How long before its window ends the bounded quota race stops (a consume may wait 1 s)."""
CLIENT_SLACK_S = 2.0
"""How much longer than the cluster's own deadline the HTTP client waits for an answer."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crdtstream bench modes``."""
    parser.add_argument("--profile", choices=sorted(PROFILES), default="lan", help="link shape")
    parser.add_argument("--latency-ms", type=float, help="one-way latency (overrides --profile)")
    parser.add_argument("--jitter-ms", type=float, help="one-way jitter (overrides --profile)")
    parser.add_argument("--bandwidth-kbps", type=float, help="per link and direction (unlimited)")
    parser.add_argument(
        "--partition",
        choices=PARTITIONS,
        default="isolate",
        help="isolate: n1 alone; minority: the largest minority n1.. against the rest (isolate)",
    )
    parser.add_argument(
        "--seconds", type=float, default=9.0, help="steady+partition+heal, per mode (9)"
    )
    parser.add_argument("--rate", type=float, default=40.0, help="offered requests/s (40)")
    parser.add_argument("--nodes", type=int, default=3, help=f"agents, 3 to {NODES_MAX} (3)")
    parser.add_argument("--trials", type=int, default=20, help="t-visibility writes per mode")
    parser.add_argument("--quota-limit", type=int, default=20, help="the quota's limit (20)")
    parser.add_argument(
        "--timeout-ms", type=int, default=1_000, help="quorum/strong deadline in the nodes"
    )
    parser.add_argument("--plots", type=Path, help="write PNG plots into this directory")
    parser.add_argument("--base-port", type=int, help="consecutive ports from here (free ones)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset")
    parser.add_argument("--seed", type=int, default=1)


# ---------------------------------------------------------------------- records


@dataclass(slots=True)
class Request:
    """One request of the open-loop load."""

    mode: str
    phase: str
    kind: str  # "write" or "read"
    node: str
    scheduled_s: float  # since the mode started
    latency_ms: float = 0.0
    finished_s: float = 0.0  # since the mode started
    ok: bool = False
    stale: bool = False


@dataclass(slots=True)
class ModeRun:
    """Everything measured for one mode."""

    mode: str
    requests: list[Request] = field(default_factory=list)
    phase_start_s: dict[str, float] = field(default_factory=dict)
    phase_end_s: dict[str, float] = field(default_factory=dict)
    visibility: dict[int, float] = field(default_factory=dict)
    quota_value: float = 0.0
    quota_applied: float = 0.0
    quota_minority_acked: int = 0
    converge_ms: float = 0.0
    bytes_per_write: float = 0.0


class Progress:
    """One line on stderr, redrawn on a terminal and printed every few seconds elsewhere."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.last_print = 0.0
        self.state = "starting"
        self.ok = 0
        self.failed = 0

    def update(self, state: str | None = None) -> None:
        if state is not None:
            self.state = state
        now = time.monotonic()
        if not self.tty and now - self.last_print < 3.0 and state is None:
            return
        self.last_print = now
        line = (
            f"bench modes: {self.state:<26} {now - self.started:6.1f} s  "
            f"{self.ok} ok, {self.failed} failed"
        )
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr)

    def done(self) -> None:
        if self.tty:
            print(file=sys.stderr)


# ---------------------------------------------------------------------- clients


class Target(Protocol):
    """What a mode runs on: our agents (:class:`~bench.cluster.Cluster`) or etcd's members."""

    @property
    def names(self) -> list[str]: ...

    def partition(self, *groups: list[str]) -> None: ...

    def heal(self) -> None: ...

    def bytes_forwarded(self) -> int: ...


class Counters(Protocol):
    """Counter writes and reads at any node, None (never an exception) when refused."""

    async def write(self, node: str, key: str, body: dict[str, Any]) -> dict[str, Any] | None: ...

    async def add(self, node: str, key: str) -> bool: ...

    async def read(
        self, node: str, key: str, consistency: str | None = None, *, per_window: bool = False
    ) -> float | None: ...


class Client:
    """Writes and reads at any node over HTTP (aiohttp), never raising for a refused request."""

    def __init__(self, cluster: Cluster, timeout_ms: int) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self.urls = {a.node_id: f"http://127.0.0.1:{a.http_port}" for a in cluster.agents}
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout_ms / 1000 + CLIENT_SLACK_S),
            connector=aiohttp.TCPConnector(limit=0),
        )

    async def close(self) -> None:
        await self.session.close()

    async def write(self, node: str, key: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The answer of an acknowledged write, None when refused or unanswered."""
        try:
            async with self.session.post(f"{self.urls[node]}/v1/keys/{key}", json=body) as answer:
                data = await answer.json() if answer.status == 200 else None
                return data if isinstance(data, dict) else None
        except (self._aiohttp.ClientError, TimeoutError):
            return None

    async def add(self, node: str, key: str) -> bool:
        """Add 1, or consume 1 of a bounded key (``bd.*``): whether it was acknowledged."""
        op = "consume" if key.startswith(PREFIX["bounded"] + ".") else "add"
        answer = await self.write(node, key, {"op": op, "value": 1})
        return answer is not None and answer.get("applied") is not False

    async def read(
        self, node: str, key: str, consistency: str | None = None, *, per_window: bool = False
    ) -> float | None:
        """The sum of the key's windows, or with ``per_window`` the largest window's value (0
        for an unknown key); None when unavailable."""
        if key.startswith(PREFIX["bounded"] + "."):
            consistency = None  # a bounded read is one node's view whatever is asked
        query = "" if consistency is None else f"?consistency={consistency}"
        try:
            async with self.session.get(f"{self.urls[node]}/v1/keys/{key}{query}") as answer:
                if answer.status == 404:
                    return 0.0
                if answer.status != 200:
                    return None
                data = await answer.json()
        except (self._aiohttp.ClientError, TimeoutError):
            return None
        values = [float(window["value"]) for window in data["windows"]]
        return max(values, default=0.0) if per_window else float(sum(values))


# ---------------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> Report:
    """Start the cluster, measure every mode in turn, stop everything; one report."""
    if not 3 <= args.nodes <= NODES_MAX:
        raise SystemExit(f"bench modes: --nodes must be 3 to {NODES_MAX}, got {args.nodes}")
    modes = [mode for mode in args.modes.split(",") if mode]
    unknown = set(modes) - set(MODES)
    if unknown:
        raise SystemExit(f"bench modes: unknown modes {sorted(unknown)} (known: {MODES})")
    etcd = shutil.which("etcd") if "etcd" in modes else None
    etcd_note = None if etcd is None else _etcd_version(etcd)
    if "etcd" in modes and etcd is None:
        print(f"bench modes: the etcd column is {ETCD_SKIPPED}", file=sys.stderr)
        modes.remove("etcd")
        etcd_note = ETCD_SKIPPED
    progress = Progress()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="crdtstream-bench-modes-") as directory:
        root = Path(directory)
        cluster = Cluster(
            root,
            size=args.nodes,
            shape=_shape(args),
            extra_toml=_policy_toml(args),
            base_port=args.base_port,
            timeout_ms=args.timeout_ms,
            seed=args.seed,
        )
        with contextlib.ExitStack() as stack:
            stack.enter_context(cluster)
            agents_started_s = time.time()  # every agent runs: later windows are theirs

            def start_etcd() -> EtcdCluster:
                # Started when its column comes, so that it does not load the machine before.
                assert etcd is not None
                anchor = EtcdCluster(
                    root / "etcd", etcd, size=args.nodes, shape=_shape(args), seed=args.seed
                )
                return stack.enter_context(anchor)

            progress.update("waiting for a Raft leader")
            cluster.wait_for_leader()
            runs = asyncio.run(
                _measure(cluster, start_etcd, args, modes, progress, agents_started_s)
            )
    progress.done()
    report = _report(runs, args)
    if etcd_note == ETCD_SKIPPED:
        report.add("etcd_skipped", 1.0, ETCD_SKIPPED)
    report.parameters = _parameters(args, modes)
    report.parameters["etcd"] = etcd_note
    report.environment = _environment(started)
    if args.plots is not None:
        _plots(runs, args.plots, args.profile)
    return report


async def _measure(
    cluster: Cluster,
    start_etcd: Callable[[], EtcdCluster],
    args: argparse.Namespace,
    modes: list[str],
    progress: Progress,
    agents_started_s: float,
) -> list[ModeRun]:
    client = Client(cluster, args.timeout_ms)
    runs = []
    try:
        await _first_strong_write(client, cluster.names, "st.warmup")
        for mode in modes:
            if mode == "etcd":
                runs.append(await _etcd_mode(start_etcd, args, progress))
            else:
                runs.append(
                    await _one_mode(cluster, client, mode, args, progress, agents_started_s)
                )
        return runs
    finally:
        await client.close()


async def _etcd_mode(
    start_etcd: Callable[[], EtcdCluster], args: argparse.Namespace, progress: Progress
) -> ModeRun:
    """The strong workload on the etcd anchor, started now behind its own fault proxies."""
    progress.update("etcd: starting")
    anchor = start_etcd()
    # The agents refuse after --timeout-ms themselves; etcd has no such deadline, so the client
    # gives up at it (a minority's etcd request would otherwise wait for etcd's own 5 s+).
    client = EtcdClient(anchor.client_urls(), args.timeout_ms / 1000)
    try:
        await _first_strong_write(client, anchor.names, "etcd.warmup")
        return await _one_mode(anchor, client, "etcd", args, progress, 0.0)
    finally:
        await client.close()


async def _first_strong_write(client: Counters, names: list[str], key: str) -> None:
    """Until a strong write succeeds at every node: every node knows the leader."""
    deadline = time.monotonic() + 30
    for name in names:
        while not await client.add(name, key):
            if time.monotonic() > deadline:
                raise TimeoutError("bench modes: strong writes still fail after 30 s")
            await asyncio.sleep(0.1)


async def _one_mode(
    cluster: Target,
    client: Counters,
    mode: str,
    args: argparse.Namespace,
    progress: Progress,
    agents_started_s: float,
) -> ModeRun:
    loop = asyncio.get_running_loop()
    prefix = PREFIX[mode]
    result = ModeRun(mode)
    names = cluster.names
    minority = _minority(names, args.partition)
    majority = [name for name in names if name not in minority]
    phase_s = args.seconds / len(PHASES)
    quota_until_s = math.inf  # unix time
    if mode == "bounded":
        progress.update("bounded: waiting for a window")
        quota_until_s = await _bounded_alignment(args, agents_started_s)
    origin = loop.time()
    acked = [0]  # adds of the load key acknowledged so far
    phase = ["steady"]
    load_key = f"{prefix}.load"
    healed_acked = 0

    async def request(number: int, scheduled_s: float) -> None:
        kind = "write" if number % 2 == 0 else "read"
        node = names[(number // 2) % len(names)]
        record = Request(mode, phase[0], kind, node, scheduled_s - origin)
        if kind == "write":
            record.ok = await client.add(node, load_key)
            if record.ok:
                acked[0] += 1
        else:
            acked_before = acked[0]
            value = await client.read(node, load_key)
            record.ok = value is not None
            record.stale = value is not None and value < acked_before
        record.latency_ms = (loop.time() - scheduled_s) * 1000.0
        record.finished_s = loop.time() - origin
        result.requests.append(record)
        if record.ok:
            progress.ok += 1
        else:
            progress.failed += 1
        progress.update()

    load = asyncio.create_task(_open_loop(request, args.rate, args.seconds))
    try:
        for name in PHASES:
            progress.update(f"{mode}: {name}")
            phase[0] = name
            result.phase_start_s[name] = loop.time() - origin
            if name == "partition":
                cluster.partition(minority)
                side_work = asyncio.gather(
                    _quota(
                        client, mode, minority, majority, phase_s, args.quota_limit, quota_until_s
                    ),
                    _partitioned_adds(client, f"{prefix}.healed", names),
                )
                await asyncio.sleep(phase_s)
                (quota_applied, result.quota_minority_acked), healed_acked = await side_work
                result.quota_applied = quota_applied
            elif name == "heal":
                cluster.heal()
                heal_s = loop.time()
                keys = [f"{prefix}.healed", f"{prefix}.quota"]
                converged = asyncio.create_task(
                    _converged(client, names, keys, healed_acked, phase_s * 4)
                )
                await asyncio.sleep(phase_s)
                converged_at = await converged
                result.converge_ms = (converged_at - heal_s) * 1000.0
            else:
                await asyncio.sleep(phase_s)
            result.phase_end_s[name] = loop.time() - origin
        await load
    finally:
        load.cancel()
        cluster.heal()
    result.quota_value = await _read_settled(client, names, f"{prefix}.quota")
    progress.update(f"{mode}: t-visibility")
    result.visibility = await _visibility(client, mode, names, args.trials)
    progress.update(f"{mode}: bytes per write")
    result.bytes_per_write = await _bytes_per_write(cluster, client, f"{prefix}.bytes", args.rate)
    return result


async def _open_loop(
    request: Callable[[int, float], Coroutine[Any, Any, None]], rate: float, seconds: float
) -> None:
    """Start request ``n`` at ``start + n / rate`` whatever the earlier ones do."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: list[asyncio.Task[None]] = []
    try:
        for number in range(int(rate * seconds)):
            scheduled = start + number / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(request(number, scheduled)))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


async def _quota(
    client: Counters,
    mode: str,
    minority: list[str],
    majority: list[str],
    seconds: float,
    limit: int,
    until_s: float = math.inf,
) -> tuple[float, int]:
    """Clients on both sides add 1 up to ``limit`` for ``seconds`` (and not past the unix time
    ``until_s``). Strong: ``conditional_add`` in the log, and the largest value an applied add
    was answered with is returned; bounded: ``consume`` until the end (a refusal is no answer),
    and the number acknowledged is returned; others: read, then add if below (0 returned). The
    limit holds per window, as the log keeps it. Second: the adds acknowledged on the minority.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + min(seconds * 0.8, until_s - time.time())
    key = f"{PREFIX[mode]}.quota"
    applied = [0.0]  # the largest value the log answered an applied add with (strong)
    acked = dict.fromkeys([*minority, *majority], 0)

    async def side(node: str) -> None:
        while loop.time() < end:
            if mode == "bounded":
                answer = await client.write(node, key, {"op": "consume", "value": 1})
                if answer is not None and answer.get("applied"):
                    acked[node] += 1
                    applied[0] += 1
                    continue
            elif mode in STRONG:
                body = {"op": "conditional_add", "value": 1, "limit": limit}
                answer = await client.write(node, key, body)
                if answer is not None:
                    if not answer.get("applied"):
                        return  # the limit is reached, and the log says so
                    applied[0] = max(applied[0], float(answer.get("value", 0.0)))
                    acked[node] += 1
                    continue
            else:
                value = await client.read(node, key, per_window=True)
                if value is not None and value + 1 > limit:
                    return
                if value is not None and await client.add(node, key):
                    acked[node] += 1
                    continue
            await asyncio.sleep(0.05)  # unavailable: try again shortly

    await asyncio.gather(*(side(node) for node in [*minority, *majority]))
    return applied[0], sum(acked[node] for node in minority)


async def _bounded_alignment(args: argparse.Namespace, agents_started_s: float) -> float:
    """Wait so that the bounded mode's steady phase starts in a window that opened after every
    agent started (a node grants itself its share only then) and its partition phase, with the
    quota race, starts just after a window boundary; the unix time the race must end by, so
    that it stays in that one window."""
    window_s = _bounded_window_ms(args.seconds) / 1000
    phase_s = float(args.seconds) / len(PHASES)
    now = time.time()
    first_owned = (agents_started_s // window_s + 1) * window_s
    boundary = math.ceil((max(first_owned, now) + phase_s) / window_s) * window_s
    await asyncio.sleep(max(0.0, boundary - phase_s - now + ALIGNMENT_MARGIN_S))
    return boundary + window_s - QUOTA_WINDOW_MARGIN_S


async def _partitioned_adds(client: Counters, key: str, names: list[str]) -> int:
    """Five adds at every node during the partition; how many were acknowledged."""
    outcomes = await asyncio.gather(*(client.add(name, key) for name in names for _ in range(5)))
    return sum(outcomes)


async def _values(client: Counters, names: list[str], key: str) -> list[float | None]:
    return list(
        await asyncio.gather(*(client.read(name, key, consistency="eventual") for name in names))
    )


async def _converged(
    client: Counters, names: list[str], keys: list[str], acked: int, deadline_s: float
) -> float:
    """The loop time at which every node reports the same value of every key in ``keys``, the
    first at least ``acked`` (the deadline's time when they never do)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while loop.time() < end:
        agreed = True
        for index, key in enumerate(keys):
            values = await _values(client, names, key)
            if (
                None in values
                or len(set(values)) != 1
                or (index == 0 and (values[0] or 0.0) < acked)
            ):
                agreed = False
        if agreed:
            return loop.time()
        await asyncio.sleep(0.01)
    return end


async def _read_settled(client: Counters, names: list[str], key: str) -> float:
    """The largest window value any node reports, once they agree (or after 10 s)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    values: list[float | None] = []
    while loop.time() < end:
        values = list(
            await asyncio.gather(
                *(client.read(name, key, "eventual", per_window=True) for name in names)
            )
        )
        if None not in values and len(set(values)) == 1:
            break
        await asyncio.sleep(0.05)
    return max((value for value in values if value is not None), default=0.0)


async def _visibility(
    client: Counters, mode: str, names: list[str], trials: int
) -> dict[int, float]:
    """Fraction of reads at another node that saw an add, per delay after its acknowledgement."""
    loop = asyncio.get_running_loop()
    seen = dict.fromkeys(PROBE_DELAYS_MS, 0)
    completed = [0]

    async def trial(number: int) -> None:
        key = f"{PREFIX[mode]}.vis.{number}"
        writer, reader = names[number % len(names)], names[(number + 1) % len(names)]
        if not await client.add(writer, key):
            return
        acked_at = loop.time()

        async def probe(delay_ms: int) -> None:
            await asyncio.sleep(max(0.0, acked_at + delay_ms / 1000 - loop.time()))
            value = await client.read(reader, key)
            if value is not None and value >= 1:
                seen[delay_ms] += 1

        await asyncio.gather(*(probe(delay) for delay in PROBE_DELAYS_MS))
        completed[0] += 1

    batch = 4  # trials in flight together: a short run, without crowding the probes
    for first in range(0, trials, batch):
        await asyncio.gather(*(trial(n) for n in range(first, min(trials, first + batch))))
    return {delay: count / max(1, completed[0]) for delay, count in seen.items()}


async def _bytes_per_write(cluster: Target, client: Counters, key: str, rate: float) -> float:
    """Bytes the proxies carried per acknowledged add during a write-only second, net of the
    idle traffic measured in the second before."""
    loop = asyncio.get_running_loop()
    before, idle_start = cluster.bytes_forwarded(), loop.time()
    await asyncio.sleep(1.0)
    idle_per_s = (cluster.bytes_forwarded() - before) / (loop.time() - idle_start)
    names = cluster.names
    acked = [0]

    async def request(number: int, scheduled_s: float) -> None:
        if await client.add(names[number % len(names)], key):
            acked[0] += 1

    before, start = cluster.bytes_forwarded(), loop.time()
    await _open_loop(request, rate, 1.0)
    await asyncio.sleep(0.5)  # the last writes' replication and gossip
    carried = cluster.bytes_forwarded() - before - idle_per_s * (loop.time() - start)
    return max(0.0, carried) / max(1, acked[0])


# ---------------------------------------------------------------------- figures


def _minority(names: list[str], partition: str) -> list[str]:
    """The nodes cut off: ``n1`` alone, or the largest minority from ``n1`` on."""
    ordered = sorted(names, key=lambda name: int(name[1:]))
    return ordered[:1] if partition == "isolate" else ordered[: (len(ordered) - 1) // 2]


def _bounded_window_ms(seconds: float) -> int:
    """The window of the bounded keys: whole seconds, at least twice a phase and 2 s, so that
    the quota race fits in one window and the wait for a fresh window stays short."""
    phase_ms = seconds * 1000 / len(PHASES)
    return max(2_000, math.ceil(2 * phase_ms / 1000) * 1000)


def _policy_toml(args: argparse.Namespace) -> str:
    """Every node's key policy as ``[[policy]]`` tables: a bounded rule is a table (its limit,
    window and members), and flags would replace the file's rules."""
    members = ", ".join(f'"n{index + 1}"' for index in range(args.nodes))
    window_ms = _bounded_window_ms(args.seconds)
    rules = [
        ("qu.*", 'mode = "quorum"'),
        ("st.*", 'mode = "strong"'),
        ("px.*", 'mode = "strong"\nbackend = "paxos"'),
        (
            "bd.quota",
            f'mode = "bounded"\nlimit = {args.quota_limit}\nwindow_ms = {window_ms}\n'
            f"members = [{members}]",
        ),
        (
            "bd.*",
            f'mode = "bounded"\nlimit = {BOUNDED_LOAD_LIMIT}\nwindow_ms = {window_ms}\n'
            f"members = [{members}]",
        ),
    ]
    return "\n".join(f'[[policy]]\npattern = "{pattern}"\n{body}' for pattern, body in rules)


def _minority_share(args: argparse.Namespace) -> int:
    """The quota's rights the minority's nodes hold between them at the window's start."""
    from crdtstream.config import PolicyRule
    from crdtstream.engine.bounded_mode import share_of

    names = tuple(f"n{index + 1}" for index in range(args.nodes))
    rule = PolicyRule(
        "bd.quota",
        "bounded",
        limit=args.quota_limit,
        window_ms=_bounded_window_ms(args.seconds),
        members=names,
    )
    return sum(share_of(rule, name) for name in _minority(list(names), args.partition))


def _etcd_version(executable: str) -> str:
    """The first line of ``etcd --version``."""
    import subprocess

    try:
        output = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return executable
    return output.splitlines()[0] if output else executable


def _shape(args: argparse.Namespace) -> LinkShape:
    """The profile's link shape with any explicit value in its place."""
    profile = PROFILES[args.profile]
    return LinkShape(
        latency_ms=profile.latency_ms if args.latency_ms is None else args.latency_ms,
        jitter_ms=profile.jitter_ms if args.jitter_ms is None else args.jitter_ms,
        bandwidth_bytes_per_s=None
        if args.bandwidth_kbps is None
        else args.bandwidth_kbps * 1000 / 8,
    )


def _percentile(values: list[float], percent: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), percent)) if values else float("nan")


def _t_visibility_ms(curve: dict[int, float]) -> float:
    """The first probed delay at which the goal fraction saw the write (the last probed delay
    when none did, reported with ``_reached`` 0)."""
    for delay in PROBE_DELAYS_MS:
        if curve.get(delay, 0.0) >= VISIBILITY_GOAL:
            return float(delay)
    return float(PROBE_DELAYS_MS[-1])


def _report(runs: list[ModeRun], args: argparse.Namespace) -> Report:
    report = Report("modes")
    rate = f"ms from the scheduled start ({args.rate:g} req/s offered, {args.profile})"
    for item in runs:
        mode = item.mode
        steady = [r for r in item.requests if r.phase == "steady" and r.ok]
        writes = [r.latency_ms for r in steady if r.kind == "write"]
        reads = [r.latency_ms for r in steady if r.kind == "read"]
        report.add(f"{mode}_write_ms_p50", _percentile(writes, 50), rate)
        report.add(f"{mode}_write_ms_p99", _percentile(writes, 99), rate)
        report.add(f"{mode}_write_ms_p999", _percentile(writes, 99.9), rate)
        report.add(f"{mode}_read_ms_p50", _percentile(reads, 50), rate)
        report.add(f"{mode}_read_ms_p99", _percentile(reads, 99), rate)
        for phase in PHASES:
            ok = sum(1 for r in item.requests if r.phase == phase and r.ok)
            span = item.phase_end_s.get(phase, 0.0) - item.phase_start_s.get(phase, 0.0)
            report.add(f"{mode}_{phase}_ok_per_s", ok / max(span, 1e-9), "requests/s answered")
            if phase != "steady":
                answered = [
                    r.latency_ms for r in item.requests if r.phase == phase and r.kind == "write"
                ]
                report.add(
                    f"{mode}_{phase}_write_ms_p99",
                    _percentile(answered, 99),
                    "ms, refusals included (their wait is the cost)",
                )
        curve = item.visibility
        report.add(f"{mode}_t_visibility_ms_p99", _t_visibility_ms(curve), "ms after the ack")
        reached = any(value >= VISIBILITY_GOAL for value in curve.values())
        report.add(f"{mode}_t_visibility_reached", float(reached), "bool (0: not within probes)")
        report.add(f"{mode}_visible_at_ack", curve.get(0, 0.0), "of reads at once after the ack")
        stale = sum(1 for r in item.requests if r.stale)
        report.add(f"{mode}_stale_reads", float(stale), "reads missing an acknowledged add")
        # Acknowledged while the partition lasted: a write started during the partition and
        # answered after the heal was served by a node no longer cut off.
        heal_s = item.phase_start_s.get("heal", float("inf"))
        cut = [r for r in item.requests if r.phase == "partition" and r.kind == "write"]
        minority_nodes = _minority(sorted({r.node for r in item.requests}), args.partition)
        # A write still in flight at the heal and acknowledged after it says nothing about the
        # partition (on a loaded machine a fsync can straddle the heal): left out of both counts.
        decided = [r for r in cut if not r.ok or r.finished_s < heal_s]
        on_minority = [r.ok for r in decided if r.node in minority_nodes]
        on_majority = [r.ok for r in decided if r.node not in minority_nodes]
        minority = sum(on_minority) / max(1, len(on_minority))
        report.add(f"{mode}_available_on_minority", minority, "of writes acknowledged")
        report.add(
            f"{mode}_available_on_majority",
            sum(on_majority) / max(1, len(on_majority)),
            "of writes acknowledged",
        )
        overshoot = max(0.0, item.quota_value - args.quota_limit)
        if mode in STRONG or mode == "bounded":
            # Strong: the largest value applied; bounded: the consumes acknowledged.
            overshoot = max(overshoot, item.quota_applied - args.quota_limit)
        report.add(f"{mode}_quota_overshoot", overshoot, f"over a limit of {args.quota_limit}")
        report.add(f"{mode}_bytes_per_write", item.bytes_per_write, "bytes (all links, net)")
        report.add(f"{mode}_converge_after_heal_ms", item.converge_ms, "ms")
        if mode in ("quorum", *STRONG):
            report.promise(f"{mode}_stale_reads", float(stale), "<= 0")
            report.promise(f"{mode}_visible_at_ack", curve.get(0, 0.0), ">= 1")
            report.promise(f"{mode}_available_on_minority", minority, "<= 0")
        if mode in STRONG:
            report.promise(f"{mode}_quota_overshoot", overshoot, "<= 0")
        if mode in ("eventual", "bounded"):
            report.promise(f"{mode}_available_on_minority", minority, ">= 1")
        if mode == "bounded":
            report.promise("bounded_quota_overshoot", overshoot, "<= 0")
            share = _minority_share(args)
            used = item.quota_minority_acked / max(1, share)
            report.add(
                "bounded_minority_quota_acked", item.quota_minority_acked, f"of its {share} rights"
            )
            report.promise("bounded_minority_share_used", used, ">= 1")
    by_name = {r.name: r.value for r in report.results}
    for mode in ("quorum", *STRONG, "bounded"):
        if f"{mode}_write_ms_p50" in by_name and "eventual_write_ms_p50" in by_name:
            ratio = by_name[f"{mode}_write_ms_p50"] / max(by_name["eventual_write_ms_p50"], 1e-9)
            report.add(f"{mode}_write_p50_vs_eventual", ratio, "x the eventual write latency")
    return report


def _parameters(args: argparse.Namespace, modes: list[str]) -> dict[str, Any]:
    shape = _shape(args)
    return {
        "profile": args.profile,
        "link": asdict(shape),
        "seconds_per_mode": args.seconds,
        "rate_per_s": args.rate,
        "nodes": args.nodes,
        "trials": args.trials,
        "quota_limit": args.quota_limit,
        "timeout_ms": args.timeout_ms,
        "base_port": args.base_port,
        "modes": modes,
        "partition": args.partition,
        "probe_delays_ms": list(PROBE_DELAYS_MS),
        "seed": args.seed,
        "plots": None if args.plots is None else str(args.plots),
        "bounded_window_ms": _bounded_window_ms(args.seconds),
        "bounded_load_limit": BOUNDED_LOAD_LIMIT,
        "figures_differ": {mode: NOT_APPLICABLE[mode] for mode in modes if mode in NOT_APPLICABLE},
    }


def _environment(started: float) -> dict[str, Any]:
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for package in ("crdtstream", "pyzmq", "aiohttp", "numpy", "matplotlib"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "started_unix_s": started,
    }


# ---------------------------------------------------------------------- plots


def _plots(runs: list[ModeRun], directory: Path, profile: str) -> list[Path]:
    """Latency over time (partition shaded), latency CDFs, t-visibility curves and answered
    requests per phase, as PNGs in ``directory``; the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    colours = {
        "eventual": "tab:green",
        "quorum": "tab:blue",
        "strong": "tab:red",
        "paxos": "tab:purple",
        "bounded": "tab:orange",
        "etcd": "tab:gray",
    }

    figure, axes = plt.subplots(len(runs), 1, figsize=(9, 2.6 * len(runs)), squeeze=False)
    for axis, item in zip(axes[:, 0], runs, strict=True):
        start, end = item.phase_start_s["partition"], item.phase_end_s["partition"]
        axis.axvspan(start, end, color="0.85", label="partition")
        for kind, marker in (("write", "o"), ("read", "x")):
            for ok in (True, False):
                points = [r for r in item.requests if r.kind == kind and r.ok == ok]
                axis.scatter(
                    [r.scheduled_s for r in points],
                    [r.latency_ms for r in points],
                    s=8,
                    marker=marker,
                    color=colours[item.mode] if ok else "black",
                    label=f"{kind} {'ok' if ok else 'failed'}",
                )
        axis.set_yscale("log")
        axis.set_title(f"{item.mode} ({profile})")
        axis.set_ylabel("latency ms")
        axis.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("seconds since the mode started")
    figure.tight_layout()
    written.append(_save(figure, directory / "latency_over_time.png"))

    figure, axis = plt.subplots(figsize=(7, 4))
    for item in runs:
        for kind, style in (("write", "-"), ("read", "--")):
            values = sorted(
                r.latency_ms
                for r in item.requests
                if r.kind == kind and r.ok and r.phase != "partition"
            )
            if values:
                fractions = [(index + 1) / len(values) for index in range(len(values))]
                axis.plot(
                    values, fractions, style, color=colours[item.mode], label=f"{item.mode} {kind}"
                )
    axis.set_xscale("log")
    axis.set_xlabel("latency ms (steady and heal phases)")
    axis.set_ylabel("fraction of requests")
    axis.legend(fontsize=8)
    written.append(_save(figure, directory / "latency_cdf.png"))

    figure, axis = plt.subplots(figsize=(7, 4))
    for item in runs:
        delays = sorted(item.visibility)
        axis.plot(
            [max(delay, 0.5) for delay in delays],
            [item.visibility[delay] for delay in delays],
            "o-",
            color=colours[item.mode],
            label=item.mode,
        )
    axis.set_xscale("log")
    axis.set_xlabel("ms after the write's acknowledgement (0 drawn at 0.5)")
    axis.set_ylabel("P(read at another node sees it)")
    axis.set_ylim(-0.05, 1.05)
    axis.legend(fontsize=8)
    written.append(_save(figure, directory / "t_visibility.png"))

    figure, axis = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(1, len(runs))
    for offset, item in enumerate(runs):
        rates = []
        for phase in PHASES:
            answered = sum(1 for r in item.requests if r.phase == phase and r.ok)
            span = item.phase_end_s[phase] - item.phase_start_s[phase]
            rates.append(answered / max(span, 1e-9))
        axis.bar(
            [index + offset * width for index in range(len(PHASES))],
            rates,
            width,
            color=colours[item.mode],
            label=item.mode,
        )
    axis.set_xticks([index + 0.4 - width / 2 for index in range(len(PHASES))], list(PHASES))
    axis.set_ylabel("requests answered per s")
    axis.legend(fontsize=8)
    written.append(_save(figure, directory / "throughput_per_phase.png"))
    return written


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
