"""The durability bench at tiny sizes: both levels measured, every figure in the JSON shape.
Not a timing test: rates only have to exist."""

from __future__ import annotations

import argparse
import json

import pytest

from bench import durability

pytestmark = [pytest.mark.timeout(120)]


def test_durability_reports_both_levels_side_by_side() -> None:
    parser = argparse.ArgumentParser()
    durability.add_arguments(parser)
    args = parser.parse_args(
        ["--seconds", "0.3", "--concurrency", "4", "--statsd-lines", "2000", "--phases", "2"]
    )
    report = json.loads(json.dumps(durability.run(args).to_json()))
    assert report["suite"] == "durability"
    results = {result["name"]: result["value"] for result in report["results"]}
    for name in (
        "durable_eventual_writes_per_s",
        "volatile_eventual_writes_per_s",
        "statsd_logged_lines_per_s",
        "statsd_volatile_lines_per_s",
    ):
        assert results[name] > 0, name
    ratios = {ratio["name"] for ratio in report["ratios"]}
    assert ratios == {"durable_writes_vs_volatile", "statsd_logged_vs_volatile"}
