"""Seeded simulations of 3 and 5 Paxos nodes under a nemesis; every history must be
linearizable, no acknowledged write lost, the quota never above its limit — with operations
forwarded to each key's preferred proposer, and that proposer crashed and cut off, so that
forwarders send on to the next proposer of the key or propose themselves (the run asserts all
of it happened).

CI runs ``SEEDS`` seeds per cluster size; ``CRDTSTREAM_PAXOS_SEEDS`` asks for others (``n`` for
one seed, ``first:end`` for a range; ``0:300`` is the full local run). A failure names its seed
and the nemesis actions that led to it.
"""

from __future__ import annotations

import os

import pytest

from tests.checkers.linearizability import Operation, Verdict, check_history
from tests.paxos.sim import QUOTA_KEY, Options, Report, Simulation

SEEDS = 40


def seeds() -> range:
    chosen = os.environ.get("CRDTSTREAM_PAXOS_SEEDS")
    if not chosen:
        return range(SEEDS)
    first, _, end = chosen.partition(":")
    return range(int(first), int(end) if end else int(first) + 1)


def explain(report: Report, problem: str) -> str:
    nemesis = "; ".join(report.nemesis_log[-20:])
    return f"seed={report.seed}: {problem}\nlast nemesis actions: {nemesis}"


def applied_for_sure(operation: Operation) -> bool:
    if operation.complete_time is None:
        return False
    return operation.kind == "add" or operation.result is True


def check_report(report: Report, limit: int) -> None:
    assert not report.violations, explain(report, "; ".join(report.violations))
    for verdict in check_history(report.history):
        assert verdict.verdict is Verdict.LINEARIZABLE, explain(report, verdict.explain())
    assert report.acknowledged_writes > 0, explain(report, "no write was acknowledged")
    assert report.restarts == report.crashes, explain(report, "a crashed node never restarted")
    keys = {operation.key for operation in report.history}
    for key in keys:
        writes = [op for op in report.history if op.key == key and op.kind != "read"]
        acknowledged = sum(op.amount for op in writes if applied_for_sure(op))
        possible = sum(op.amount for op in writes if op.result is not False)
        for node_id, values in report.final_values.items():
            value = values[key]
            assert acknowledged <= value <= possible, explain(
                report, f"{node_id} reads {key}={value}, acknowledged {acknowledged}"
            )
            if key == QUOTA_KEY:
                assert value <= limit, explain(report, f"quota {value} above its limit {limit}")


def assert_the_faults_struck(reports: list[Report]) -> None:
    """Summed over the seeds, every kind of fault happened (a nemesis that stopped striking
    would leave every history trivially linearizable)."""
    totals = {
        "crashes": sum(r.crashes for r in reports),
        "records lost by a crash before fsync": sum(r.records_lost for r in reports),
        "partitions": sum(r.partitions for r in reports),
        "ballot conflicts between proposers": sum(r.conflicts for r in reports),
        "packets dropped": sum(r.dropped for r in reports),
        "packets duplicated": sum(r.duplicated for r in reports),
        "packets reordered": sum(r.reordered for r in reports),
        "unknown outcomes": sum(r.unknown_outcomes for r in reports),
        "rounds that skipped prepare (one round trip)": sum(r.one_round_trips for r in reports),
        "operations forwarded to a key's proposer": sum(r.forwarded for r in reports),
        "forwards answered by the key's proposer": sum(r.forwards_answered for r in reports),
        "fallbacks from an unanswered forward": sum(r.fallbacks for r in reports),
        "forwards sent on to the next proposer": sum(r.rerouted for r in reports),
        "crashes of a key's proposer": sum(r.leader_crashes for r in reports),
        "partitions cutting a key's proposer off": sum(r.leader_cut_off for r in reports),
    }
    missing = [name for name, count in totals.items() if count == 0]
    assert not missing, f"never happened: {missing} ({totals})"


@pytest.mark.parametrize("nodes", [3, 5])
def test_histories_are_linearizable_under_the_nemesis(nodes: int) -> None:
    reports = []
    for seed in seeds():
        options = Options(seed=seed, nodes=nodes)
        try:
            report = Simulation(options).run()
        except Exception as error:
            raise AssertionError(f"seed={seed} nodes={nodes}: {error!r}") from error
        check_report(report, options.limit)
        reports.append(report)
    if len(reports) >= 10:  # a replay of one seed need not show every fault
        assert_the_faults_struck(reports)


def test_a_run_is_reproducible_from_its_seed() -> None:
    first, second = Simulation(Options(seed=7)).run(), Simulation(Options(seed=7)).run()
    assert first.history == second.history
    assert first.nemesis_log == second.nemesis_log
