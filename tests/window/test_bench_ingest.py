"""The ingest bench runs end to end at a tiny size and reports every figure (shape, not speed)."""

from __future__ import annotations

import argparse

from bench import ingest


def test_tiny_ingest_bench_reports_every_figure() -> None:
    parser = argparse.ArgumentParser()
    ingest.add_arguments(parser)
    sizes = "--events 20000 --keys 200 --windows 3 --batch 5000 --dict-events 2000"
    args = parser.parse_args([*sizes.split(), "--statsd-lines", "400", "--repeats", "1"])
    report = ingest.run(args).to_json()
    assert report["suite"] == "ingest"
    ratios = {r["name"]: r for r in report["ratios"]}
    expected = {
        "store_vs_bincount",
        "store_vs_dict",
        "bytes_per_counter_key_window_per_replica",
        "delta_vs_full_bytes",
    }
    assert expected <= set(ratios)
    assert all(isinstance(r["met"], bool) and r["value"] > 0 for r in ratios.values())
    results = {r["name"]: r["value"] for r in report["results"]}
    assert results["bytes_per_counter_key_window_1_replica"] > 0
    assert "statsd_lines_per_s" in results
