"""The agent bench at tiny rates and durations: a real agent and real senders produce every
figure, and a missing anchor is reported as skipped. Not a timing test: rates only have to
exist, and at a few thousand lines per second nothing may be lost."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bench import agent

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(180)]


def test_agent_bench_reports_every_figure_and_skips_missing_anchors(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    agent.add_arguments(parser)
    args = parser.parse_args(
        [
            *("--step-seconds", "0.4", "--fixed-step-seconds", "0.4", "--senders", "1"),
            *("--multi-rates", "20000", "--single-rates", "2000"),
            *("--etsy-statsd", str(tmp_path / "no-statsd-here")),
            *("--collectd", str(tmp_path / "no-collectd-here")),
        ]
    )
    report = json.loads(json.dumps(agent.run(args).to_json()))
    assert report["suite"] == "agent"
    results = {result["name"]: result["value"] for result in report["results"]}
    assert results["etsy_skipped"] == 1
    assert results["collectd_skipped"] == 1
    for shape, rate in (("multi", 20_000), ("single", 2_000)):
        assert results[f"agent_{shape}_max_lines_per_s"] == pytest.approx(rate, rel=0.2)
        assert results[f"agent_{shape}_cpu_us_per_line_at_{agent.FIXED_RATES[shape] // 1000}k"] > 0
        assert results[f"agent_{shape}_max_event_loop_lag_ms_p99"] >= 0
    assert results["agent_receive_buffer_bytes_granted"] > 0
    assert report["ratios"] == []  # no anchor, no ratio
