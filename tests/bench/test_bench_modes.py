"""The modes bench at tiny durations: every figure in the JSON shape, and the promises it checks
(no stale quorum or strong read, no quorum or strong write on a minority, eventual writes
always) hold. Not a timing test: rates only have to exist."""

from __future__ import annotations

import argparse
import json

import pytest

from bench import modes

pytestmark = [pytest.mark.timeout(120)]


def test_modes_report_every_figure_and_keep_their_promises() -> None:
    parser = argparse.ArgumentParser()
    modes.add_arguments(parser)
    args = parser.parse_args(
        [
            "--seconds",
            "0.3",
            "--concurrency",
            "4",
            "--trials",
            "6",
            "--statsd-lines",
            "2000",
        ]
    )
    report = json.loads(json.dumps(modes.run(args).to_json()))
    assert report["suite"] == "modes"
    results = {result["name"]: result["value"] for result in report["results"]}
    for mode in modes.MODES:
        for figure in ("writes_per_s", "write_ms_p50", "write_ms_p99", "reads_per_s"):
            assert results[f"{mode}_{figure}"] > 0, (mode, figure)
    for name in (
        "durable_eventual_writes_per_s",
        "volatile_eventual_writes_per_s",
        "statsd_logged_lines_per_s",
        "statsd_volatile_lines_per_s",
    ):
        assert results[name] > 0, name
    ratios = {ratio["name"]: ratio for ratio in report["ratios"]}
    for name in (
        "quorum_stale_read_fraction",
        "strong_stale_read_fraction",
        "quorum_available_on_minority",
        "strong_available_on_minority",
        "eventual_available_on_minority",
    ):
        assert ratios[name]["met"], ratios[name]
