"""The README's examples of the embedded replica run as written (on free loopback ports)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.library.addresses import free_tcp_address

pytestmark = [pytest.mark.timeout(120)]

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "## Embedding a replica: `crdtstream.open`, watch, in-memory clusters"


def _examples() -> list[str]:
    text = README.read_text()
    section = text[text.index(HEADING) :]
    section = section[: section.index("\n## ", len(HEADING))]
    blocks = section.split("```python\n")[1:]
    return [block[: block.index("```")] for block in blocks]


def _run(example: str) -> list[str]:
    # The README names fixed ports; here each gets one that is free now.
    for port in ("7001", "7002", "7003"):
        example = example.replace(f"127.0.0.1:{port}", free_tcp_address().removeprefix("tcp://"))
    root = str(README.parent)
    ran = subprocess.run(
        [sys.executable, "-c", example],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.splitlines()


def test_the_readme_has_three_library_examples() -> None:
    assert len(_examples()) == 3


def test_two_replicas_watch_and_read() -> None:
    lines = _run(_examples()[0])
    assert lines[0] == "change hits eventual False"
    assert lines[-1] == "eventual quorum 3.0"


def test_the_synchronous_replica() -> None:
    assert _run(_examples()[1]) == [
        "hits [5.0]",
        "quota True 1",
        "quota True 2",
        "quota False 2",
    ]


def test_the_simulated_cluster() -> None:
    assert _run(_examples()[2]) == ["minority: no quorum", "n3 sees [1.0]"]
