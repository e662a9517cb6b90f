"""The Raft bench at tiny durations: every figure in the JSON shape, the etcd anchor or its skip,
and no process or data directory left behind. Not a timing test: rates only have to exist."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from bench import raft

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(240)]

TINY = ["--seconds", "1", "--rounds", "1", "--rate", "200"]
TINY += ["--concurrency", "16", "--read-concurrency", "32"]
FIGURES = {
    "durable_writes_per_s",
    "commit_latency_ms_p50",
    "commit_latency_ms_p99",
    "linearizable_reads_per_s",
    "requests_failed",
    "writes_refused",
    "raft_term_changes",
    "etcd_anchor_skipped",
}


@pytest.fixture
def private_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bench's temporary directory goes under ``tmp_path``: its processes can be found by
    that path in their command lines, and its removal can be checked."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _run(root: Path) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    raft.add_arguments(parser)
    report = raft.run(parser.parse_args(TINY)).to_json()
    assert _processes_mentioning(str(root)) == [], "a process of the bench outlived it"
    assert _zombie_children() == [], "a child of the bench was never reaped"
    assert list(root.iterdir()) == [], "the bench left files behind"
    decoded: dict[str, Any] = json.loads(json.dumps(report))
    assert decoded["suite"] == "raft"
    return decoded


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command_line = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # exited while we looked
        if text.encode() in command_line:
            found.append(int(entry.name))
    return found


def _zombie_children() -> list[int]:
    zombies = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            zombies.append(int(entry.name))
    return zombies


def _by_name(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in entries}


def test_every_figure_is_reported_with_the_etcd_ratio_when_etcd_is_installed(
    private_temp: Path,
) -> None:
    report = _run(private_temp)
    results = _by_name(report["results"])
    ratios = _by_name(report["ratios"])
    assert set(results) >= FIGURES
    assert results["durable_writes_per_s"]["value"] > 0
    assert results["linearizable_reads_per_s"]["value"] > 0
    assert (
        0 < results["commit_latency_ms_p50"]["value"] <= results["commit_latency_ms_p99"]["value"]
    )
    assert "linearizable_reads_vs_goal" in ratios
    assert {entry["goal"] for entry in ratios.values()} <= {">= 1", ">= 2"}
    assert all(isinstance(entry["met"], bool) for entry in ratios.values())
    etcd_installed = shutil.which("etcd") is not None
    assert results["etcd_anchor_skipped"]["value"] == (0.0 if etcd_installed else 1.0)
    assert ("writes_vs_etcd" in ratios) == etcd_installed
    if etcd_installed:
        assert results["etcd_writes_per_s"]["value"] > 0
        assert ratios["writes_vs_etcd"]["goal"] == ">= 2"


def test_without_etcd_on_the_path_the_anchor_is_reported_as_skipped(
    private_temp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(private_temp / "no-such-bin"))
    report = _run(private_temp)
    results = _by_name(report["results"])
    assert results["etcd_anchor_skipped"]["value"] == 1.0
    assert not [name for name in results if name.startswith("etcd_") and "skipped" not in name]
    assert "writes_vs_etcd" not in _by_name(report["ratios"])
    assert "etcd anchor is skipped" in capsys.readouterr().err
