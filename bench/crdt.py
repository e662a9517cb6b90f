"""CRDT types: add and merge ops/s per type, encode/decode MB/s, vectorised add_many vs a loop.

The ratios ``hll_add_many_vs_loop`` and ``distribution_add_many_vs_loop`` compare, in the same
run and over the same values, one ``add_many`` call against a Python loop of ``add``. The loop
runs over the first ``--loop-values`` values only and is scaled per value (the result names say
so), which keeps a default run short.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from bench.report import Report, best_of

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crdtstream bench crdt``."""
    parser.add_argument(
        "--values", type=int, default=1_000_000, help="values for add_many (default 1,000,000)"
    )
    parser.add_argument(
        "--loop-values",
        type=int,
        default=100_000,
        help="how many of those values the per-item loop baseline adds (default 100,000)",
    )
    parser.add_argument(
        "--ops", type=int, default=20_000, help="single adds timed per type (default 20,000)"
    )
    parser.add_argument(
        "--state-ops",
        type=int,
        default=2_000,
        help="adds that build each state used for merge and codec figures (default 2,000)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated values")


def _type_table() -> dict[str, tuple[Callable[[str], Any], Callable[[Any, int], Any]]]:
    """Per type: how to build one and how to apply its ``i``-th typical add."""
    from crdtstream.crdt import (
        Distribution,
        GCounter,
        GSet,
        HyperLogLog,
        LWWRegister,
        MaxRegister,
        MinRegister,
        ORSet,
        PNCounter,
    )

    return {
        "gcounter": (GCounter, lambda c, i: c.add(1)),
        "pncounter": (PNCounter, lambda c, i: c.add(1 if i % 3 else -1)),
        "gset": (GSet, lambda s, i: s.add(f"item-{i % 5_000}")),
        "orset": (
            ORSet,
            lambda s, i: s.add(f"item-{i % 500}") if i % 4 else s.remove(f"item-{i % 500}"),
        ),
        "lww_register": (LWWRegister, lambda r, i: r.set(i, timestamp_ms=i)),
        "max_register": (MaxRegister, lambda r, i: r.observe(float(i % 1_000))),
        "min_register": (MinRegister, lambda r, i: r.observe(float(-(i % 1_000)))),
        "hll": (HyperLogLog, lambda h, i: h.add(i)),
        "distribution": (Distribution, lambda d, i: d.add(float(1 + i % 10_000))),
    }


def _measure_type(
    report: Report,
    name: str,
    build: Callable[[str], Any],
    apply: Callable[[Any, int], Any],
    args: argparse.Namespace,
) -> None:
    def add_loop() -> None:
        state = build("a")
        for i in range(args.ops):
            apply(state, i)

    report.add(f"{name}_add", args.ops / best_of(args.repeats, add_loop), "ops/s")

    first, second = build("a"), build("b")
    deltas = [apply(second, i) for i in range(args.state_ops)]
    for i in range(args.state_ops):
        apply(first, i + args.state_ops)

    def merge_deltas() -> None:
        target = first.copy()
        for delta in deltas:
            target.merge(delta)

    seconds = best_of(args.repeats, merge_deltas)
    report.add(f"{name}_merge_delta", len(deltas) / seconds, "merges/s")
    merges = 50
    report.add(
        f"{name}_merge_state",
        merges / best_of(args.repeats, lambda: [first.copy().merge(second) for _ in range(merges)]),
        "merges/s (incl. copy)",
    )
    _measure_codec(report, name, first, args.repeats)


def _measure_codec(report: Report, name: str, state: Any, repeats: int) -> None:
    encoded = state.to_bytes()
    rounds = 20
    encode_seconds = best_of(repeats, lambda: [state.to_bytes() for _ in range(rounds)])
    decode_seconds = best_of(
        repeats, lambda: [type(state).from_bytes(encoded) for _ in range(rounds)]
    )
    megabytes = len(encoded) * rounds / 1e6
    report.add(f"{name}_state_bytes", len(encoded), "bytes")
    report.add(f"{name}_encode", megabytes / encode_seconds, "MB/s")
    report.add(f"{name}_decode", megabytes / decode_seconds, "MB/s")


def _compare_add_many(
    report: Report,
    name: str,
    build: Callable[[], Any],
    values: Any,
    loop_values: int,
    repeats: int,
) -> None:
    """``add_many`` over all values vs an ``add`` loop over a prefix, scaled per value."""

    def vectorised() -> None:
        build().add_many(values)

    prefix = values[:loop_values].tolist()

    def looped() -> None:
        state = build()
        for value in prefix:
            state.add(value)

    many_seconds = best_of(repeats, vectorised)
    start = time.perf_counter()
    looped()
    loop_seconds_per_value = (time.perf_counter() - start) / len(prefix)
    many_rate = len(values) / many_seconds
    loop_rate = 1.0 / loop_seconds_per_value
    report.add(f"{name}_add_many", many_rate, f"values/s (one call, {len(values):,} values)")
    report.add(
        f"{name}_add_loop",
        loop_rate,
        f"values/s (per-item add loop over the first {len(prefix):,} of the same values)",
    )
    report.ratio(f"{name}_add_many_vs_loop", many_rate / loop_rate, ">= 20")


def run(args: argparse.Namespace) -> Report:
    """Run the suite and return its report."""
    import numpy as np

    from crdtstream.crdt import Distribution, HyperLogLog

    report = Report("crdt")
    for name, (build, apply) in _type_table().items():
        _measure_type(report, name, build, apply, args)

    rng = np.random.default_rng(args.seed)
    loop_values = max(1, min(args.loop_values, args.values))
    items = rng.integers(0, 2**62, size=args.values, dtype=np.int64)
    _compare_add_many(report, "hll", lambda: HyperLogLog("a"), items, loop_values, args.repeats)
    samples = rng.lognormal(3.0, 1.5, size=args.values)
    _compare_add_many(
        report, "distribution", lambda: Distribution("a"), samples, loop_values, args.repeats
    )
    return report
