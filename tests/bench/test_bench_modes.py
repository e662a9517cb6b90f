"""The modes bench at tiny durations through its command: every figure in the JSON shape with
the parameters and the environment, the plots written, and the exit status saying whether the
promises held, the bounded and etcd columns included (etcd is installed by
``scripts/system-deps``; without it the column must say it was skipped). Not a timing test:
latencies only have to exist."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench import modes
from crdtstream.cli import main

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(300)]

FIGURES = (
    "write_ms_p50",
    "write_ms_p99",
    "t_visibility_ms_p99",
    "available_on_minority",
    "quota_overshoot",
    "bytes_per_write",
    "converge_after_heal_ms",
)


TINY = ["--profile", "region", "--seconds", "2.4", "--rate", "30", "--trials", "4"]


def _run(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, Any]]:
    status = main(["bench", "modes", *TINY, "--quota-limit", "5", "--json", *extra])
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return status, report


def test_the_command_reports_every_figure_writes_plots_and_exits_by_the_promises(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which("etcd") is None:
        pytest.fail("the etcd binary is missing: apt-get install etcd-server (scripts/check does)")
    plots = tmp_path / "plots"
    status, report = _run(capsys, "--plots", str(plots))
    assert report["suite"] == "modes"
    results = {result["name"]: result["value"] for result in report["results"]}
    assert set(modes.MODES) >= {"bounded", "etcd"}
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
    # The new columns' promises are among those checked, so a broken one fails the command.
    for name in (
        "bounded_quota_overshoot",
        "bounded_available_on_minority",
        "bounded_minority_share_used",
        "etcd_stale_reads",
        "etcd_quota_overshoot",
        "etcd_available_on_minority",
    ):
        assert name in promises, name
    # Limit 5 over three nodes: n1, alone in the partition, holds 2 rights and spends them.
    assert results["bounded_minority_quota_acked"] == 2
    assert report["parameters"]["etcd"].startswith("etcd Version")
    assert "etcd_skipped" not in results
    assert sorted(path.name for path in plots.iterdir()) == [
        "latency_cdf.png",
        "latency_over_time.png",
        "t_visibility.png",
        "throughput_per_phase.png",
    ]


def test_without_etcd_on_the_path_the_etcd_column_says_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-such-bin"))
    status, report = _run(capsys, "--modes", "eventual,etcd")
    results = {result["name"]: result for result in report["results"]}
    assert report["parameters"]["etcd"] == "skipped: etcd not installed"
    assert results["etcd_skipped"]["unit"] == "skipped: etcd not installed"
    assert [name for name in results if name.startswith("etcd_")] == ["etcd_skipped"]
    assert "eventual_write_ms_p50" in results
    assert status == (1 if report["broken_promises"] else 0)
