"""The statsd bench workload and figures (small sizes: shape only, never timings)."""

from __future__ import annotations

from bench._statsd import LINES_PER_DATAGRAM, run_statsd, statsd_workload
from bench.report import Report
from crdtstream.config import WindowConfig
from crdtstream.ingest import parse
from crdtstream.window import WindowStore


def test_workload_is_seeded_and_packed_twenty_lines_per_datagram() -> None:
    datagrams = statsd_workload(101, seed=5)
    assert datagrams == statsd_workload(101, seed=5)
    assert datagrams != statsd_workload(101, seed=6)
    assert [d.count(b"\n") + 1 for d in datagrams] == [LINES_PER_DATAGRAM] * 5 + [1]
    result = parse(datagrams, 0)
    assert (result.lines_ok, result.lines_rejected) == (101, 0)
    assert set(result.batches) == {"counter", "gauge", "distinct", "distribution"}


def test_run_statsd_records_its_figures_with_and_without_a_store() -> None:
    for make_store in (None, lambda: WindowStore("bench~0001", WindowConfig())):
        report = Report("ingest")
        run_statsd(report, make_store, lines=400, repeats=1)
        assert [r.name for r in report.results] == [
            "statsd_lines_per_s",
            "statsd_first_sight_lines_per_s",
            "statsd_parse_lines_per_s",
            "statsd_per_line_lines_per_s",
        ]
        assert [r.name for r in report.ratios] == [
            "statsd_lines_per_s_vs_goal",
            "statsd_vs_per_line",
        ]
        assert all(r.value > 0 for r in report.results)
