"""The gossip bench runs at a tiny size and reports the result names the issue asks for."""

from __future__ import annotations

import argparse

from bench import gossip


def test_the_bench_reports_rounds_bytes_and_both_ratios() -> None:
    parser = argparse.ArgumentParser()
    gossip.add_arguments(parser)
    args = parser.parse_args(
        ["--sizes", "4,8", "--trials", "1", "--keys", "300", "--bytes-nodes", "4"]
    )
    report = gossip.run(args).to_json()
    names = {result["name"] for result in report["results"]}
    assert {"rounds_n4", "rounds_n8", "rounds_n8_loss10"} <= names
    assert {"delta_bytes_per_event", "full_state_bytes_per_event"} <= names
    ratios = {ratio["name"]: ratio for ratio in report["ratios"]}
    assert set(ratios) == {"rounds_vs_log2n_n8", "delta_vs_full_bytes"}
    assert all(result["value"] > 0 for result in report["results"])
