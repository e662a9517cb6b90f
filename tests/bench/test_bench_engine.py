"""The engine bench at a tiny size: every figure and both ratios in the JSON shape, and no
logged write answered before the log held it. Not a timing test: figures only have to exist."""

from __future__ import annotations

import argparse
import json

import pytest

from bench import engine
from crdtstream.window.store import WindowStore

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
    assert report["parameters"] == {
        "writes": 20,
        "rounds": 2,
        "keys": engine.KEYS,
        "retained_keys": 0,
        "retained_slices": 1,
    }


def test_engine_bench_fills_the_stores_it_is_asked_to() -> None:
    parser = argparse.ArgumentParser()
    engine.add_arguments(parser)
    args = parser.parse_args(["--writes", "5", "--rounds", "1", "--keys", "30", "--slices", "4"])
    report = engine.run(args).to_json()
    assert report["parameters"]["retained_keys"] == 30
    assert report["parameters"]["retained_slices"] == 4
    store = WindowStore("bench~0001")
    engine._fill(store, 30, 4)
    assert len(store.window_starts()) == 4
    for start in store.window_starts():
        values = store.read_window(start).values
        assert values == {f"bench.retained.{index}": 1.0 for index in range(30)}
    assert store.late_total == 0


def test_engine_bench_refuses_more_slices_than_a_store_retains() -> None:
    parser = argparse.ArgumentParser()
    engine.add_arguments(parser)
    args = parser.parse_args(["--slices", str(engine.RETENTION_WINDOWS + 1)])
    with pytest.raises(SystemExit, match="--slices"):
        engine.run(args)
