"""The Quick start's demo: three nodes over ZeroMQ converge and the strong quota holds exactly."""

from __future__ import annotations

import asyncio

import pytest

from crdtstream.agent.demo import QUOTA_LIMIT, run_demo
from crdtstream.cli import main

pytestmark = [pytest.mark.timeout(90)]


def test_demo_converges_and_the_quota_holds(capsys: pytest.CaptureFixture[str]) -> None:
    outcome = asyncio.run(run_demo(seed=3))
    assert outcome.quota_applied == QUOTA_LIMIT
    assert outcome.quota_reads == (float(QUOTA_LIMIT),) * 3
    assert "converged" in capsys.readouterr().out


def test_demo_command_exits_zero() -> None:
    assert main(["demo", "--seed", "4"]) == 0
