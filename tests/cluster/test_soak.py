"""``scripts/soak`` at a tiny size: no error, and every node's retained windows hold exactly the
adds acknowledged in them, in every mode (memory flatness needs minutes, so it is not judged)."""

from __future__ import annotations

import json

import pytest

from bench import _soak

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(120)]


def test_a_short_soak_has_no_error_and_exact_sums(capsys: pytest.CaptureFixture[str]) -> None:
    arguments = ["--minutes", "0.1", "--calibrate-seconds", "1", "--sample-seconds", "1"]
    status = _soak.main([*arguments, "--rss-growth-max", "10", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["errors"] == {}
    assert report["sum_mismatches"] == []
    assert report["requests"] > 10
    assert set(report["memory"]) == {"n1", "n2", "n3"}
    assert status == 0


def test_the_slope_is_least_squares_per_minute() -> None:
    assert _soak._slope_per_minute([(0.0, 100.0), (30.0, 101.0), (60.0, 102.0)]) == 2.0
    assert _soak._slope_per_minute([(0.0, 5.0), (60.0, 5.0)]) == 0.0
