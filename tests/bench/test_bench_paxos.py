"""The Paxos bench at tiny durations: every figure in the JSON shape, both ratios, and no
process or data directory left behind (the SIGKILLed node was restarted and then stopped).
Not a timing test: figures only have to exist."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from bench import paxos
from tests.bench.test_bench_raft import _by_name, _processes_mentioning, _zombie_children

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(240)]

TINY = ["--seconds", "1", "--rounds", "1", "--kill-after", "0.5", "--observe", "1.5"]
TINY += ["--concurrency", "8", "--read-concurrency", "16"]
FIGURES = {
    "paxos_durable_writes_per_s",
    "raft_durable_writes_per_s",
    "paxos_linearizable_reads_per_s",
    "raft_linearizable_reads_per_s",
    "paxos_kill_stall_ms",
    "raft_kill_stall_ms",
    "requests_failed",
}


def test_every_figure_and_both_ratios_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    parser = argparse.ArgumentParser()
    paxos.add_arguments(parser)
    report: dict[str, Any] = json.loads(json.dumps(paxos.run(parser.parse_args(TINY)).to_json()))
    assert _processes_mentioning(str(tmp_path)) == [], "a process of the bench outlived it"
    assert _zombie_children() == [], "a child of the bench was never reaped"
    assert list(tmp_path.iterdir()) == [], "the bench left files behind"
    assert report["suite"] == "paxos"
    results, ratios = _by_name(report["results"]), _by_name(report["ratios"])
    assert set(results) == FIGURES
    assert results["paxos_durable_writes_per_s"]["value"] > 0
    assert results["paxos_linearizable_reads_per_s"]["value"] > 0
    assert results["raft_kill_stall_ms"]["value"] > 0
    assert ratios["paxos_vs_raft_kill_stall"]["goal"] == "<= 0.5"
    assert set(ratios) == {"paxos_vs_raft_kill_stall", "paxos_vs_raft_writes"}
