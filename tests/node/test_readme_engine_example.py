"""The README's example of one node serving every mode runs as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(60)]

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "### One node, every mode"


def _example() -> str:
    text = README.read_text()
    section = text[text.index(HEADING) :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]


def test_the_readme_example_of_every_mode_runs() -> None:
    root = str(README.parent)
    environment = {**os.environ, "PYTHONPATH": root}
    ran = subprocess.run(
        [sys.executable, "-c", _example()],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=root,
        env=environment,
    )
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[:3] == [
        "api.hits counter eventual [3.0]",
        "orders.eu counter quorum [1.0]",
        "quota.calls counter strong [1]",
    ]
    assert lines[3].startswith("refused: conditional_add needs a strong key")
