"""The soak run behind ``scripts/soak``: the cluster under steady load for a long time.

Three agents (all Raft voters, keys ``ev.*`` eventual, ``qu.*`` quorum, ``st.*`` strong) run
behind the fault proxies of :mod:`bench.cluster` at ``--profile``. First the maximal rate is
measured: a closed loop of ``--concurrency`` requests in flight for ``--calibrate-seconds``.
Then an open loop offers ``--load`` (0.8) of that rate for ``--minutes``: counter adds in each
mode and reads, spread over the nodes, every add stamped with the client's clock so that the
window it lands in is known. Every ``--sample-seconds`` the resident memory (RSS) of every agent
is read from ``/proc``.

At the end, on the quiet cluster: every node must report, for every window it still retains,
exactly the adds acknowledged in that window (eventual exact sums; quorum and strong likewise),
and the run must have had no error. The RSS slope over the second half of the run (least
squares, per agent) is reported in KiB per minute, with the growth over that half as a fraction
of the RSS at its start; memory is flat when that growth stays within ``--rss-growth-max``
(0.05). Windows are kept for ``--retention-windows`` (6, one minute) instead of the default ten
minutes, so the store reaches its steady size early in the run. Exit status 0 when every check
holds, 1 otherwise; ``--json`` prints the whole report as one object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.cluster import PROFILES, Cluster

WINDOW_MS = 10_000
KEYS = {"eventual": "ev.soak", "quorum": "qu.soak", "strong": "st.soak"}
POLICY = ("qu.*=quorum", "st.*=strong")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The options (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak (10)")
    parser.add_argument("--load", type=float, default=0.8, help="fraction of the max rate (0.8)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="lan")
    parser.add_argument("--calibrate-seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--retention-windows", type=int, default=6)
    parser.add_argument("--rss-growth-max", type=float, default=0.05)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


def _rss_kib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1])
    return 0.0


def _slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, KiB) samples, in KiB per minute."""
    if len(samples) < 2:
        return 0.0
    count = len(samples)
    mean_t = sum(t for t, _ in samples) / count
    mean_v = sum(v for _, v in samples) / count
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if spread == 0:
        return 0.0
    return 60.0 * sum((t - mean_t) * (v - mean_v) for t, v in samples) / spread


class Load:
    """Mixed requests through HTTP; acknowledged adds per mode and window, errors by kind."""

    def __init__(self, cluster: Cluster) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self.urls = [f"http://127.0.0.1:{agent.http_port}" for agent in cluster.agents]
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self.acked: dict[str, Counter[int]] = {mode: Counter() for mode in KEYS}
        self.errors: Counter[str] = Counter()
        self.first_errors: dict[str, str] = {}
        """The first answer of each kind of error, so a report says what went wrong."""
        self.completed = 0

    async def request(self, number: int) -> None:
        url = self.urls[number % len(self.urls)]
        modes = list(KEYS)
        mode = modes[(number // len(self.urls)) % len(modes)]
        key = KEYS[mode]
        try:
            if number % 2 == 0:
                stamp_ms = int(time.time() * 1000)
                body = {"op": "add", "value": 1, "timestamp_ms": stamp_ms}
                async with self.session.post(f"{url}/v1/keys/{key}", json=body) as answer:
                    text = await answer.read()
                    if answer.status == 200:
                        self.acked[mode][stamp_ms // WINDOW_MS * WINDOW_MS] += 1
                    else:
                        self._error(f"{mode}_write_{answer.status}", text.decode(errors="replace"))
            else:
                async with self.session.get(f"{url}/v1/keys/{key}") as answer:
                    text = await answer.read()
                    if answer.status not in (200, 404):
                        self._error(f"{mode}_read_{answer.status}", text.decode(errors="replace"))
        except (self._aiohttp.ClientError, TimeoutError) as error:
            self._error(f"{mode}_{type(error).__name__}", repr(error))
        self.completed += 1

    def _error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        self.first_errors.setdefault(kind, detail[:300])

    async def windows(self, url: str, key: str, consistency: str) -> dict[int, float]:
        async with self.session.get(f"{url}/v1/keys/{key}?consistency={consistency}") as answer:
            if answer.status == 404:
                return {}
            data = await answer.json()
        return {int(w["start_ms"]): float(w["value"]) for w in data["windows"]}


async def _closed_loop(load: Load, concurrency: int, seconds: float) -> float:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    counter = [0]

    async def worker() -> None:
        while loop.time() < end:
            counter[0] += 1
            await load.request(counter[0])

    start = loop.time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counter[0] / (loop.time() - start)


async def _soak(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    load = Load(cluster)
    try:
        return await _soak_with(cluster, load, args)
    finally:
        await load.session.close()


async def _soak_with(cluster: Cluster, load: Load, args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    max_rate = await _closed_loop(load, args.concurrency, args.calibrate_seconds)
    rate = max(1.0, args.load * max_rate)
    pids = {a.node_id: a.process.pid for a in cluster.agents if a.process is not None}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in pids}
    seconds = args.minutes * 60
    start = loop.time()
    next_sample = start
    tasks: set[asyncio.Task[None]] = set()
    number = 0
    while loop.time() < start + seconds:
        now = loop.time()
        if now >= next_sample:
            for name, pid in pids.items():
                samples[name].append((now - start, _rss_kib(pid)))
            next_sample += args.sample_seconds
            print(
                f"soak: {now - start:7.1f} s  {load.completed} requests  "
                f"{sum(load.errors.values())} errors  "
                f"rss {', '.join(f'{n} {s[-1][1] / 1024:.1f} MiB' for n, s in samples.items())}",
                file=sys.stderr,
            )
        scheduled = start + number / rate
        if scheduled > now:
            await asyncio.sleep(scheduled - now)
        task = asyncio.create_task(load.request(number))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        number += 1
    await asyncio.gather(*tasks)
    await asyncio.sleep(3.0)  # quiet: the last gossip and commits settle
    mismatches = await _check_sums(load)
    half = seconds / 2
    memory = {}
    for name, points in samples.items():
        late = [(t, v) for t, v in points if t >= half]
        growth = (late[-1][1] - late[0][1]) / late[0][1] if len(late) >= 2 else 0.0
        memory[name] = {
            "rss_mib_start": points[0][1] / 1024,
            "rss_mib_end": points[-1][1] / 1024,
            "slope_kib_per_min_last_half": _slope_per_minute(late),
            "growth_last_half": growth,
        }
    flat = all(abs(m["growth_last_half"]) <= args.rss_growth_max for m in memory.values())
    return {
        "parameters": vars(args),
        "max_rate_per_s": max_rate,
        "offered_rate_per_s": rate,
        "requests": number,
        "errors": dict(load.errors),
        "first_errors": load.first_errors,
        "sum_mismatches": mismatches,
        "memory": memory,
        "memory_flat": flat,
        "ok": flat and not load.errors and not mismatches,
    }


async def _check_sums(load: Load) -> list[str]:
    """Every node's retained windows against the acknowledged adds, per mode."""
    mismatches = []
    for mode, key in KEYS.items():
        for url in load.urls:
            consistency = "eventual" if mode != "strong" else "strong"
            for start_ms, value in (await load.windows(url, key, consistency)).items():
                expected = load.acked[mode].get(start_ms, 0)
                if value != expected:
                    mismatches.append(f"{mode} {url} window {start_ms}: {value} != {expected}")
    return mismatches


def main(argv: list[str] | None = None) -> int:
    """Run the soak; print the report; 0 when every check held."""
    args = parse_arguments(argv)
    with tempfile.TemporaryDirectory(prefix="crdtstream-soak-") as directory:
        cluster = Cluster(
            Path(directory),
            shape=PROFILES[args.profile],
            policy=POLICY,
            extra_toml=f"[window]\nretention_windows = {args.retention_windows}",
        )
        with cluster:
            cluster.wait_for_leader()
            report = asyncio.run(_soak(cluster, args))
    if args.json:
        print(json.dumps(report))
    else:
        for name, value in report.items():
            if name != "parameters":
                print(f"{name}: {value}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
