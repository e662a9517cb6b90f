"""The CRDT bench suite runs end to end and reports the agreed JSON shape (no timing checks)."""

from __future__ import annotations

import argparse
import json

import pytest

from bench import crdt as bench_crdt
from crdtstream.cli import main


def tiny_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench_crdt.add_arguments(parser)
    sizes = ["--values", "3000", "--loop-values", "300", "--ops", "50", "--state-ops", "20"]
    return parser.parse_args([*sizes, "--repeats", "1"])


def test_run_reports_every_type_and_both_ratios() -> None:
    report = bench_crdt.run(tiny_arguments()).to_json()
    assert report["suite"] == "crdt"
    assert set(report) == {"suite", "results", "ratios"}
    names = {result["name"] for result in report["results"]}
    for type_name in ["gcounter", "pncounter", "gset", "orset", "lww_register", "hll"]:
        for figure in ["add", "merge_delta", "merge_state", "encode", "decode"]:
            assert f"{type_name}_{figure}" in names
    for result in report["results"]:
        assert set(result) == {"name", "value", "unit"}
        assert result["value"] > 0, result
    ratios = {ratio["name"]: ratio for ratio in report["ratios"]}
    assert set(ratios) == {"hll_add_many_vs_loop", "distribution_add_many_vs_loop"}
    for ratio in ratios.values():
        assert ratio["goal"] == ">= 20"
        assert isinstance(ratio["met"], bool)


def test_cli_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "crdt", "--json", "--values", "2000", "--loop-values", "100"]
    argv += ["--ops", "20", "--state-ops", "10", "--repeats", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["suite"] == "crdt"
