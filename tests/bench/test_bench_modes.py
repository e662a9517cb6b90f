"""The modes bench at tiny durations through its command: every figure in the JSON shape with
the parameters and the environment, the plots written, and the exit status saying whether the
promises held. Not a timing test: latencies only have to exist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import modes
from crdtstream.cli import main

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(180)]

FIGURES = (
    "write_ms_p50",
    "write_ms_p99",
    "t_visibility_ms_p99",
    "available_on_minority",
    "quota_overshoot",
    "bytes_per_write",
    "converge_after_heal_ms",
)


def test_the_command_reports_every_figure_writes_plots_and_exits_by_the_promises(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plots = tmp_path / "plots"
    status = main(
        [
            "bench",
            "modes",
            "--profile",
            "region",
            "--seconds",
            "2.4",
            "--rate",
            "30",
            "--trials",
            "4",
            "--quota-limit",
            "5",
            "--json",
            "--plots",
            str(plots),
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert report["suite"] == "modes"
    results = {result["name"]: result["value"] for result in report["results"]}
    for mode in modes.MODES:
        for figure in FIGURES:
            assert f"{mode}_{figure}" in results, (mode, figure)
        assert 0 < results[f"{mode}_write_ms_p50"] <= results[f"{mode}_write_ms_p99"]
    assert report["parameters"]["profile"] == "region"
    assert report["parameters"]["seconds_per_mode"] == 2.4
    assert report["environment"]["cores"] >= 1
    assert report["environment"]["versions"]["crdtstream"]
    promises = {ratio["name"]: ratio["met"] for ratio in report["ratios"]}
    assert set(report["broken_promises"]) == {name for name, met in promises.items() if not met}
    assert status == (1 if report["broken_promises"] else 0)
    assert report["broken_promises"] == [], report["broken_promises"]
    assert sorted(path.name for path in plots.iterdir()) == [
        "latency_cdf.png",
        "latency_over_time.png",
        "t_visibility.png",
        "throughput_per_phase.png",
    ]
