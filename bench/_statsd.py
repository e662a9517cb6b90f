"""statsd / DogStatsD ingest figures, run by the ``ingest`` suite (``crdtstream bench ingest``).

``run_statsd(report, make_store)`` records, in one run:

- ``statsd_lines_per_s``: lines per second through a running parser and store (parse + the
  store's batch ingest), and the ratio ``statsd_lines_per_s_vs_goal`` against the goal of
  1,000,000 lines/s on one core (goal ``>= 1``). "Running" means both have already taken one
  pass of the same mix drawn with another seed, as an agent has after its first seconds: most
  keys are known, yet about a fifth of the timed pass's keys (18 % of its lines) are new.
  Each repeat starts from a fresh parser and store (``make_store()``) and its own warm-up;
  best of ``repeats``. With ``make_store=None`` the figures are parse only and their units
  say so;
- ``statsd_first_sight_lines_per_s``: the same timed pass into a fresh parser and a fresh
  store, so every key is new to both (about 90,000 keys in 200,000 lines): the worst case, a
  node's first burst;
- ``statsd_parse_lines_per_s``: the running parser alone;
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

from bench.report import Report, timed

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


def _datagram(chooser: random.Random, lines: int) -> bytes:
    # A datagram comes from one client, so its lines share the host's tags.
    host = chooser.randrange(_HOSTS)
    service = chooser.choice(_NAMES)
    tags = (
        f"#env:{_ENVIRONMENTS[host % 2]},region:{_REGIONS[host % 3]},host:h{host},"
        f"service:{service.split('.')[0]}"
    )
    return "\n".join(_line(chooser, tags) for _ in range(lines)).encode("ascii")


def statsd_workload(lines: int, seed: int) -> list[bytes]:
    """``lines`` statsd lines of the standard mix as datagrams of 20 lines (the last may hold
    fewer): 40 % counters (a quarter sampled at 0.1), 20 % gauges, 15 % sets, 25 % timers (half
    sampled at 0.5), each with four tags (one datagram = one host), over 120 metric names and
    50 hosts. Each datagram's ``service`` tag is drawn at random, which makes about 36,000
    possible keys per kind (about 90,000 distinct keys in 200,000 lines)."""
    chooser = random.Random(seed)
    return [
        _datagram(chooser, min(LINES_PER_DATAGRAM, lines - start))
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


def _parse_and_ingest(parser: Any, batches: Sequence[list[bytes]], store: Any) -> None:
    for batch in batches:
        for kind, rows in parser.parse(batch, _NOW_MS).batches.items():
            if store is not None:
                store.ingest_batch(kind, rows)


def _timed_pass(
    batches: Sequence[list[bytes]],
    warm_up: Sequence[list[bytes]] | None,
    make_store: Callable[[], Any] | None,
) -> float:
    """Seconds of one pass of ``batches`` through a fresh parser and store, after they took
    ``warm_up`` (untimed) when given."""
    from crdtstream.ingest import StatsdParser

    parser = StatsdParser()
    store = None if make_store is None else make_store()
    if warm_up is not None:
        _parse_and_ingest(parser, warm_up, store)
    return timed(lambda: _parse_and_ingest(parser, batches, store))


def run_statsd(
    report: Report,
    make_store: Callable[[], Any] | None,
    *,
    lines: int = 200_000,
    seed: int = 1,
    repeats: int = 3,
) -> None:
    """Add the statsd figures to ``report`` (see the module docstring)."""
    from crdtstream.ingest import StatsdParser, parse_reference

    batches = _batches(statsd_workload(lines, seed))
    warm_up = _batches(statsd_workload(lines, seed + 1))
    # The ratio interleaves the two parsers on the same batches, each timed best of `repeats`,
    # so a busy machine slows both alike. The per-line side reads a prefix to stay quick.
    sample = batches[: max(1, len(batches) // 4)]
    sample_lines = sum(datagram.count(b"\n") + 1 for batch in sample for datagram in batch)
    vectorised = StatsdParser()
    vectorised_s = per_line_s = float("inf")
    for _ in range(repeats):
        vectorised_s = min(vectorised_s, timed(lambda: _parse_all(vectorised.parse, sample)))
        per_line_s = min(per_line_s, timed(lambda: _parse_all(parse_reference, sample)))
    running_s = min(_timed_pass(batches, warm_up, make_store) for _ in range(repeats))
    first_sight_s = min(_timed_pass(batches, None, make_store) for _ in range(repeats))
    parse_s = min(_timed_pass(batches, warm_up, None) for _ in range(repeats))
    through = "parse only, no store given" if make_store is None else "parse + store ingest"
    report.add("statsd_lines_per_s", lines / running_s, f"lines/s ({through}; running)")
    report.add(
        "statsd_first_sight_lines_per_s",
        lines / first_sight_s,
        f"lines/s ({through}; fresh parser and store, every key new)",
    )
    report.add("statsd_parse_lines_per_s", lines / parse_s, "lines/s (vectorised parse; running)")
    report.add("statsd_per_line_lines_per_s", sample_lines / per_line_s, "lines/s (per-line parse)")
    report.ratio("statsd_lines_per_s_vs_goal", lines / running_s / GOAL_LINES_PER_S, ">= 1")
    report.ratio("statsd_vs_per_line", per_line_s / vectorised_s, ">= 4")
