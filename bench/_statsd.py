"""statsd / DogStatsD ingest figures, run by the ``ingest`` suite (``crdtstream bench ingest``).

``run_statsd(report, make_store)`` records, in one run:

- ``statsd_lines_per_s``: lines per second through the vectorised parser plus the store's batch
  ingest (one pass into the fresh store ``make_store()`` returns; with ``make_store=None`` the
  figure is parse only and its unit says so), and the ratio ``statsd_lines_per_s_vs_goal``
  against the goal of 1,000,000 lines/s on one core (goal ``>= 1``);
- ``statsd_parse_lines_per_s``: the vectorised parser alone, best of ``repeats``;
- ``statsd_steady_hosts_lines_per_s``: parse + ingest as above (a fresh store, once) of the
  same mix where every host always reports as one service, as hosts usually do: about 6,000
  keys instead of about 90,000. The goal figure keeps the standard mix, whose random service
  tag per datagram makes almost every line of a batch a key of its own; this figure shows the
  rate when the key set is steady (a fact about the traffic, not a change of the goal);
- ``statsd_per_line_lines_per_s`` and the ratio ``statsd_vs_per_line``: the per-line parser
  against the vectorised one on the same quarter of the batches, the two timed alternately
  (best of ``repeats`` each) so that a busy machine slows both alike (goal ``>= 4``).

The workload is the standard mix of :func:`statsd_workload`: counters, gauges, sets and timers
with tags and sample rates, 20 lines per datagram, parsed ``DATAGRAMS_PER_BATCH`` datagrams at a
time as an agent draining its socket would.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from bench.report import Report, best_of, timed

__all__ = ["DATAGRAMS_PER_BATCH", "LINES_PER_DATAGRAM", "run_statsd", "statsd_workload"]

LINES_PER_DATAGRAM = 20
DATAGRAMS_PER_BATCH = 500
GOAL_LINES_PER_S = 1_000_000
_NOW_MS = 1_700_000_000_000
_NAMES = ("api.requests", "api.errors", "db.queries", "cache.hits", "queue.depth", "jobs.run")
_ENVIRONMENTS = ("prod", "staging")
_REGIONS = ("eu-west-1", "us-east-1", "ap-south-1")
_HOSTS = 50


def _line(chooser: random.Random, tags: str) -> str:
    name = f"{chooser.choice(_NAMES)}.{chooser.randrange(20)}"
    draw = chooser.random()
    if draw < 0.40:
        rate = "|@0.1" if chooser.random() < 0.25 else ""
        return f"{name}.count:{chooser.randrange(1, 100)}|c{rate}|{tags}"
    if draw < 0.60:
        return f"{name}.level:{chooser.uniform(0, 1000):.2f}|g|{tags}"
    if draw < 0.75:
        return f"{name}.users:user{chooser.randrange(10_000)}|s|{tags}"
    rate = "|@0.5" if chooser.random() < 0.5 else ""
    return f"{name}.latency:{chooser.uniform(0, 500):.3f}|ms{rate}|{tags}"


def _datagram(chooser: random.Random, lines: int, steady_hosts: bool) -> bytes:
    # A datagram comes from one client, so its lines share the host's tags.
    host = chooser.randrange(_HOSTS)
    drawn = chooser.choice(_NAMES)  # drawn either way, so both mixes get the same lines
    service = _NAMES[host % len(_NAMES)] if steady_hosts else drawn
    tags = (
        f"#env:{_ENVIRONMENTS[host % 2]},region:{_REGIONS[host % 3]},host:h{host},"
        f"service:{service.split('.')[0]}"
    )
    return "\n".join(_line(chooser, tags) for _ in range(lines)).encode("ascii")


def statsd_workload(lines: int, seed: int, *, steady_hosts: bool = False) -> list[bytes]:
    """``lines`` statsd lines of the standard mix as datagrams of 20 lines (the last may hold
    fewer): 40 % counters (a quarter sampled at 0.1), 20 % gauges, 15 % sets, 25 % timers (half
    sampled at 0.5), each with four tags (one datagram = one host), over 120 metric names and
    50 hosts. Each datagram's ``service`` tag is drawn at random, which makes about 36,000
    possible keys per kind (about 90,000 distinct keys in 200,000 lines); with
    ``steady_hosts`` a host always names the same service (about 6,000 keys in all)."""
    chooser = random.Random(seed)
    return [
        _datagram(chooser, min(LINES_PER_DATAGRAM, lines - start), steady_hosts)
        for start in range(0, lines, LINES_PER_DATAGRAM)
    ]


def _batches(datagrams: list[bytes]) -> list[list[bytes]]:
    return [
        datagrams[start : start + DATAGRAMS_PER_BATCH]
        for start in range(0, len(datagrams), DATAGRAMS_PER_BATCH)
    ]


def _parse_all(parse: Callable[..., Any], batches: Sequence[list[bytes]]) -> None:
    for batch in batches:
        parse(batch, _NOW_MS)


def _parse_and_ingest(batches: Sequence[list[bytes]], store: Any) -> None:
    from crdtstream.ingest import parse

    for batch in batches:
        for kind, rows in parse(batch, _NOW_MS).batches.items():
            store.ingest_batch(kind, rows)


def run_statsd(
    report: Report,
    make_store: Callable[[], Any] | None,
    *,
    lines: int = 200_000,
    seed: int = 1,
    repeats: int = 3,
) -> None:
    """Add the statsd figures to ``report`` (see the module docstring)."""
    from crdtstream.ingest import parse, parse_reference

    batches = _batches(statsd_workload(lines, seed))
    # The ratio interleaves the two parsers on the same batches, each timed best of `repeats`,
    # so a busy machine slows both alike. The per-line side reads a prefix to stay quick.
    sample = batches[: max(1, len(batches) // 4)]
    sample_lines = sum(datagram.count(b"\n") + 1 for batch in sample for datagram in batch)
    vectorised_s = per_line_s = float("inf")
    for _ in range(repeats):
        vectorised_s = min(vectorised_s, timed(lambda: _parse_all(parse, sample)))
        per_line_s = min(per_line_s, timed(lambda: _parse_all(parse_reference, sample)))
    parse_s = best_of(repeats, lambda: _parse_all(parse, batches))
    if make_store is None:
        end_to_end_s, unit = parse_s, "lines/s (parse only, no store given)"
    else:
        # Once, into a fresh store: the store's growth is part of what is measured.
        store = make_store()
        end_to_end_s = timed(lambda: _parse_and_ingest(batches, store))
        unit = "lines/s (parse + store ingest)"
    lines_per_s = lines / end_to_end_s
    report.add("statsd_lines_per_s", lines_per_s, unit)
    report.add("statsd_parse_lines_per_s", lines / parse_s, "lines/s (vectorised parse)")
    if make_store is not None:
        steady = _batches(statsd_workload(lines, seed, steady_hosts=True))
        steady_store = make_store()
        steady_s = timed(lambda: _parse_and_ingest(steady, steady_store))
        report.add(
            "statsd_steady_hosts_lines_per_s",
            lines / steady_s,
            "lines/s (parse + store ingest, one service per host: ~6,000 keys)",
        )
    report.add("statsd_per_line_lines_per_s", sample_lines / per_line_s, "lines/s (per-line parse)")
    report.ratio("statsd_lines_per_s_vs_goal", lines_per_s / GOAL_LINES_PER_S, ">= 1")
    report.ratio("statsd_vs_per_line", per_line_s / vectorised_s, ">= 4")
