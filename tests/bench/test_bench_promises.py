"""A suite's promises: an unmet one is listed in the JSON and fails the bench command; plain
ratios that miss their goal do not."""

from __future__ import annotations

import argparse
import json

import pytest

from bench.report import Report
from crdtstream import cli


def _report(promise_value: float, ratio_value: float) -> Report:
    report = Report("example")
    report.add("figure", 1.0, "units")
    report.promise("never_stale", promise_value, "<= 0")
    report.ratio("faster_than_baseline", ratio_value, ">= 2")
    report.parameters = {"seconds": 1.0}
    report.environment = {"cores": 2}
    return report


def test_an_unmet_promise_is_listed_and_a_missed_ratio_is_not() -> None:
    shape = json.loads(_report(promise_value=3.0, ratio_value=1.0).dumps())
    assert shape["broken_promises"] == ["never_stale"]
    assert {ratio["name"]: ratio["met"] for ratio in shape["ratios"]} == {
        "never_stale": False,
        "faster_than_baseline": False,
    }
    assert shape["parameters"] == {"seconds": 1.0}
    assert shape["environment"] == {"cores": 2}
    kept = json.loads(_report(promise_value=0.0, ratio_value=1.0).dumps())
    assert kept["broken_promises"] == []


def test_a_report_without_extras_keeps_the_original_shape() -> None:
    report = Report("plain")
    report.add("figure", 1.0, "units")
    assert set(report.to_json()) == {"suite", "results", "ratios"}


@pytest.mark.parametrize(("promise_value", "status"), [(0.0, 0), (1.0, 1)])
def test_the_bench_command_fails_exactly_when_a_promise_breaks(
    promise_value: float, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    class Suite:
        @staticmethod
        def run(args: argparse.Namespace) -> Report:
            return _report(promise_value, ratio_value=1.0)

    args = argparse.Namespace(bench_module=Suite, json=True, suite="example")
    assert cli._run_bench(args) == status
    captured = capsys.readouterr()
    assert json.loads(captured.out)["suite"] == "example"
    assert ("never_stale" in captured.err) == bool(status)
