"""``crdtstream bench transport`` runs end to end at a tiny scale and leaves no process behind.

Figures are not asserted (no timing in tests); the shape of the report and the clean-up are.
"""

from __future__ import annotations

import argparse
import multiprocessing

import pytest

from bench import transport

pytestmark = pytest.mark.multiprocess


def test_a_tiny_run_reports_every_figure_and_reaps_its_children() -> None:
    args = argparse.Namespace(scale=0.002, repeats=1, round_trips=20)
    report = transport.run(args)
    names = {result.name for result in report.results}
    for kind in ("raw_pyzmq", "zmq_transport", "zmq_transport_curve"):
        for size in ("100b", "1k", "64k"):
            assert f"{kind}_{size}_messages" in names
            assert f"{kind}_{size}_throughput" in names
    assert {"zmq_transport_round_trip_100b_p50", "zmq_transport_round_trip_100b_p99"} <= names
    assert all(result.value > 0 for result in report.results)
    assert [ratio.name for ratio in report.ratios] == [
        "zmq_transport_vs_raw_1k",
        "zmq_transport_vs_raw_64k",
        "curve_vs_plain_1k",
        "curve_vs_plain_64k",
    ]
    assert multiprocessing.active_children() == []


def test_a_child_that_dies_is_an_error_not_a_hang() -> None:
    with pytest.raises(RuntimeError, match="exited"), transport._child(_exit_at_once) as (_, pipe):
        transport._expect(pipe, "address")
    assert multiprocessing.active_children() == []


def _exit_at_once(_connection: object) -> None:
    """A child that leaves without a word."""
