"""The bounded bench at a tiny size: every figure exists and the promises it checks hold (no
overshoot of the bounded quota, its minority writes served within its rights). Not a timing
test: the write costs only have to exist."""

from __future__ import annotations

import argparse
import json

import pytest

from bench import bounded

pytestmark = [pytest.mark.timeout(120)]


def test_bounded_bench_reports_every_figure_and_keeps_its_promises() -> None:
    parser = argparse.ArgumentParser()
    bounded.add_arguments(parser)
    args = parser.parse_args(
        ["--limit", "60", "--seconds", "1", "--cost-writes", "200", "--keys-many", "2000"]
    )
    report = json.loads(json.dumps(bounded.run(args).to_json()))
    results = {result["name"]: result["value"] for result in report["results"]}
    for name in (
        "bounded_local_write_us",
        "eventual_write_us",
        "bounded_writes_acknowledged",
        "bounded_round_us_few_keys",
        "bounded_round_us_many_keys",
    ):
        assert results[name] > 0, name
    assert results["eventual_quota_overshoot"] > 0, "the split did not let eventual overshoot"
    ratios = {ratio["name"]: ratio for ratio in report["ratios"]}
    assert ratios["bounded_quota_overshoot"]["value"] == 0
    assert ratios["bounded_available_on_minority"]["value"] == 1
