"""The engine bench at a tiny size: every figure and both ratios in the JSON shape, and no
logged write answered before the log held it. Not a timing test: figures only have to exist."""

from __future__ import annotations

import argparse
import json

import pytest

from bench import engine

pytestmark = [pytest.mark.timeout(120)]


def test_engine_bench_reports_single_writes_beside_the_store_add() -> None:
    parser = argparse.ArgumentParser()
    engine.add_arguments(parser)
    args = parser.parse_args(["--writes", "20", "--rounds", "2"])
    report = json.loads(json.dumps(engine.run(args).to_json()))
    assert report["suite"] == "engine"
    results = {result["name"]: result for result in report["results"]}
    for figure in ("store_add", "engine_single_write", "engine_single_logged_write"):
        for quantile in ("p50", "p99"):
            result = results.pop(f"{figure}_us_{quantile}")
            assert result["value"] > 0, result
            assert result["unit"] == "µs", result
    assert results == {}
    ratios = {ratio["name"]: ratio["value"] for ratio in report["ratios"]}
    assert set(ratios) == {
        "engine_single_write_vs_store_add",
        "engine_single_logged_write_vs_store_add",
    }
    assert all(value > 0 for value in ratios.values())
    assert report["parameters"] == {"writes": 20, "rounds": 2, "keys": engine.KEYS}
