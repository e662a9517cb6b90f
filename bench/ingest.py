"""Windowed store ingest: store vs np.bincount vs a dict, statsd lines/s, state and delta bytes.

Side by side in one run: N counter events over K keys and W windows (timestamps in stream
order) through ``WindowStore.ingest`` in batches; ``np.bincount`` over the same (window, key)
ids with the same weights (the floor: what any columnar aggregation must at least do); and a
pure-Python dict of ``(key, window) -> sum`` over a prefix of the events, scaled per event.
Also: bytes of state per counter key-window for 1 and for 3 replicas (per replica), the size of
a delta after touching 1 % of the keys relative to the full state, and the statsd figures of
``bench/_statsd.py`` (parse + ingest).
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.report import Report, best_of

__all__ = ["add_arguments", "run"]

_WINDOW_MS = 10_000
_START_MS = 1_700_000_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sizes of the workload."""
    parser.add_argument("--events", type=int, default=10_000_000, help="counter events")
    parser.add_argument("--keys", type=int, default=10_000, help="distinct keys")
    parser.add_argument("--windows", type=int, default=10, help="windows the events span")
    parser.add_argument("--batch", type=int, default=1_000_000, help="events per ingest call")
    parser.add_argument(
        "--dict-events", type=int, default=1_000_000, help="events for the dict baseline"
    )
    parser.add_argument("--statsd-lines", type=int, default=200_000, help="0 skips statsd")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs")


def _workload(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(1)
    key_index = rng.integers(0, args.keys, args.events, dtype=np.int64)
    values = rng.integers(1, 10, args.events).astype(np.float64)
    offsets = np.sort(rng.integers(0, args.windows * _WINDOW_MS, args.events, dtype=np.int64))
    return {
        "names": [f"bench.counter.{i}" for i in range(args.keys)],
        "key_index": key_index,
        "values": values,
        "timestamps_ms": _START_MS + offsets,
    }


def _make_store(replica: str = "bench~0001") -> Any:
    from crdtstream.config import WindowConfig
    from crdtstream.window.store import WindowStore

    config = WindowConfig(size_ms=_WINDOW_MS, allowed_lateness_ms=_WINDOW_MS, retention_windows=60)
    return WindowStore(replica, config)


def _ingest_all(store: Any, work: dict[str, Any], batch: int) -> None:
    for start in range(0, len(work["key_index"]), batch):
        end = start + batch
        store.ingest(
            "counter",
            work["names"],
            work["key_index"][start:end],
            work["values"][start:end],
            work["timestamps_ms"][start:end],
        )


def _dict_baseline(work: dict[str, Any], count: int, repeats: int) -> float:
    names = work["names"]
    triples = list(
        zip(
            work["key_index"][:count].tolist(),
            work["values"][:count].tolist(),
            work["timestamps_ms"][:count].tolist(),
            strict=True,
        )
    )

    def aggregate() -> None:
        sums: dict[tuple[str, int], float] = {}
        for key, value, stamp in triples:
            cell = (names[key], stamp // _WINDOW_MS)
            sums[cell] = sums.get(cell, 0.0) + value

    return best_of(repeats, aggregate) / max(count, 1)


def _state_figures(report: Report, work: dict[str, Any], args: argparse.Namespace) -> None:
    import numpy as np

    cells = args.keys * args.windows
    stores = [_make_store(f"bench~000{i}") for i in range(3)]
    for store in stores:
        _ingest_all(store, work, args.batch)
    report.add("bytes_per_counter_key_window_1_replica", stores[0].state_bytes() / cells, "B")
    for other in stores[1:]:
        stores[0].merge(other.full_state())
    per_replica = stores[0].state_bytes() / cells / 3
    report.add("bytes_per_counter_key_window_3_replicas", per_replica, "B per replica")
    report.ratio("bytes_per_counter_key_window_per_replica", per_replica, "<= 64")
    store = stores[1]
    mark = store.version
    touched = np.arange(0, args.keys, 100, dtype=np.int64)
    stamps = np.full(len(touched), int(work["timestamps_ms"][-1]), dtype=np.int64)
    store.ingest("counter", work["names"], touched, np.ones(len(touched)), stamps)
    delta_bytes = len(store.delta_since(mark).to_bytes())
    full_bytes = len(store.full_state().to_bytes())
    report.add("full_state_bytes", full_bytes, "B (1 replica)")
    report.add("delta_bytes_after_touching_1_percent", delta_bytes, "B")
    report.ratio("delta_vs_full_bytes", delta_bytes / full_bytes, "<= 0.05")


def run(args: argparse.Namespace) -> Report:
    """Run the suite and return its report."""
    import numpy as np

    report = Report("ingest")
    work = _workload(args)
    store_s = best_of(args.repeats, lambda: _ingest_all(_make_store(), work, args.batch))
    window_ids = (work["timestamps_ms"] - _START_MS) // _WINDOW_MS
    codes = window_ids * args.keys + work["key_index"]
    cells = args.windows * args.keys
    bincount_s = best_of(
        args.repeats, lambda: np.bincount(codes, weights=work["values"], minlength=cells)
    )
    dict_count = min(args.dict_events, args.events)
    dict_s_per_event = _dict_baseline(work, dict_count, args.repeats)
    events = args.events
    report.add("store_events_per_s", events / store_s, "events/s (batch ingest)")
    report.add("bincount_events_per_s", events / bincount_s, "events/s (np.bincount floor)")
    report.add(
        "dict_events_per_s", 1 / dict_s_per_event, f"events/s (dict, first {dict_count} events)"
    )
    report.ratio("store_vs_bincount", bincount_s / store_s, ">= 0.25")
    report.ratio("store_vs_dict", dict_s_per_event * events / store_s, ">= 20")
    _state_figures(report, work, args)
    if args.statsd_lines > 0:
        _statsd_figures(report, args.statsd_lines)
    return report


def _statsd_figures(report: Report, lines: int) -> None:
    try:
        from bench._statsd import run_statsd
    except ImportError:  # the parser suite is optional until it lands
        report.add("statsd_lines_per_s", 0.0, "not measured: bench/_statsd.py missing")
        return
    run_statsd(report, _make_store, lines=lines)
