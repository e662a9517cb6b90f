"""Seeded simulations of 3 and 5 Raft nodes under a nemesis; every history must be linearizable.

A failure names its seed. Replay just that seed (or a range, ``first:end``) with
``CRDTSTREAM_SIM_SEEDS=<seed> python -m pytest tests/raft/test_simulation.py``; the failure
message shows the nemesis actions that led to it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sim import Options, Report, Simulation

from tests.checkers.linearizability import Operation, Verdict, check_history

SEEDS_PER_SIZE = 150


def seeds() -> range:
    """The seeds to run: ``CRDTSTREAM_SIM_SEEDS`` (``n`` or ``first:end``), else the CI set."""
    chosen = os.environ.get("CRDTSTREAM_SIM_SEEDS")
    if not chosen:
        return range(SEEDS_PER_SIZE)
    first, _, end = chosen.partition(":")
    return range(int(first), int(end) if end else int(first) + 1)


WAL_SEEDS_PER_SIZE = 20


def explain(report: Report, problem: str) -> str:
    nemesis = "; ".join(report.nemesis_log[-20:])
    return f"seed={report.seed}: {problem}\nlast nemesis actions: {nemesis}"


def check_report(report: Report) -> None:
    assert not report.violations, explain(report, "; ".join(report.violations))
    for verdict in check_history(report.history):
        assert verdict.verdict is Verdict.LINEARIZABLE, explain(report, verdict.explain())
    assert_nothing_acknowledged_is_missing(report)
    # Every seed makes progress: a leader was elected, writes were acknowledged, and every
    # node the nemesis crashed came back (the final phase restarts all, then converges).
    assert report.terms >= 1, explain(report, "no leader was ever elected")
    assert report.acknowledged_writes > 0, explain(report, "no write was acknowledged")
    assert report.restarts == report.crashes, explain(
        report, f"{report.crashes} crashes but {report.restarts} restarts"
    )


def assert_the_nemesis_struck(reports: list[Report]) -> None:
    """Summed over the seeds, every kind of fault happened: a nemesis whose coverage fell to
    zero would leave every history trivially linearizable."""
    totals = {
        "crashes": sum(r.crashes for r in reports),
        "partitions": sum(r.partitions for r in reports),
        "snapshots installed": sum(r.snapshots_installed for r in reports),
        "membership changes applied": sum(r.conf_changes_applied for r in reports),
        "leader changes": sum(r.terms - 1 for r in reports),
    }
    missing = [name for name, count in totals.items() if count == 0]
    seeds = [r.seed for r in reports]
    assert not missing, f"seeds {seeds[0]}..{seeds[-1]}: never happened: {missing} ({totals})"


def assert_nothing_acknowledged_is_missing(report: Report) -> None:
    """Every node ends with every acknowledged write, and nothing that was never attempted."""
    for key in {operation.key for operation in report.history}:
        writes = [op for op in report.history if op.key == key and op.kind != "read"]
        acknowledged = sum(op.amount for op in writes if applied_for_sure(op))
        possible = sum(op.amount for op in writes if op.result is not False)
        for node_id, values in report.final_values.items():
            value = values[key] or 0
            assert isinstance(value, int)
            assert acknowledged <= value <= possible, explain(
                report, f"{node_id} holds {key}={value}, acknowledged {acknowledged}"
            )


def applied_for_sure(operation: Operation) -> bool:
    if operation.complete_time is None:
        return False
    return operation.kind == "add" or operation.result is True


def run(seed: int, nodes: int) -> Report:
    return run_options(Options(seed=seed, nodes=nodes))


def run_options(options: Options) -> Report:
    try:
        return Simulation(options).run()
    except Exception as error:
        raise AssertionError(f"seed={options.seed} nodes={options.nodes}: {error!r}") from error


@pytest.mark.slow
@pytest.mark.parametrize("nodes", [3, 5])
def test_histories_are_linearizable_under_the_nemesis(nodes: int) -> None:
    acknowledged = 0
    chosen = seeds()
    reports = []
    for seed in chosen:
        report = run(seed, nodes)
        check_report(report)
        acknowledged += report.acknowledged_writes
        reports.append(report)
    assert acknowledged > len(chosen) * 5, "the workload must get writes through"
    if len(chosen) >= 10:  # a replay of one seed need not show every fault
        assert_the_nemesis_struck(reports)


@pytest.mark.parametrize("nodes", [3, 5])
def test_histories_are_linearizable_with_the_write_ahead_log(tmp_path: Path, nodes: int) -> None:
    """The same nemesis with every node's log on disk, crashed and replayed from its files;
    frequent snapshots make the logs compact and delete their oldest segments.
    """
    first_segments_deleted = 0
    reports = []
    for seed in range(WAL_SEEDS_PER_SIZE):
        directory = tmp_path / f"seed-{seed}-nodes-{nodes}"
        options = Options(
            seed=seed,
            nodes=nodes,
            operations_per_client=12,
            snapshot_every_entries=5,
            wal_directory=directory,
        )
        report = run_options(options)
        check_report(report)
        reports.append(report)
        assert any(directory.glob("*/*.snap")), f"seed={seed}: no snapshot was ever written"
        first_segment = f"{0:016x}-{1:016x}.wal"
        first_segments_deleted += sum(
            not (node / first_segment).exists() for node in directory.iterdir()
        )
    assert first_segments_deleted > 0, "compaction never deleted a segment"
    assert_the_nemesis_struck(reports)


def test_a_run_is_reproducible_from_its_seed() -> None:
    first, second = run(7, 3), run(7, 3)
    assert first.history == second.history
    assert first.nemesis_log == second.nemesis_log
