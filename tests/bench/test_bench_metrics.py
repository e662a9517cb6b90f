"""The metrics bench at a tiny size: every key is exported and every figure is present. Not a
timing test: the figures only have to exist."""

from __future__ import annotations

import argparse
import json

from bench import metrics


def test_metrics_bench_exports_every_key_and_reports_each_figure() -> None:
    parser = argparse.ArgumentParser()
    metrics.add_arguments(parser)
    report = json.loads(json.dumps(metrics.run(parser.parse_args(["--keys", "50"])).to_json()))
    results = {result["name"]: result["value"] for result in report["results"]}
    assert results["keys_exported"] == 55  # 50 counters and 5 distributions
    for name in ("exposition_bytes", "scrape", "families_build", "encode_prometheus_client"):
        assert results[name] > 0, name
    assert [ratio["name"] for ratio in report["ratios"]] == ["families_build_over_encode"]
