"""``crdtstream keygen``: a loadable key pair, the secret private from birth, no overwrites."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from crdtstream.cli import main
from transports.zeromq import load_key_pair, load_public_keys


def test_keygen_writes_a_pair_the_transport_can_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keygen", "--node-id", "edge-7", "--dir", str(tmp_path)]) == 0
    secret_path = tmp_path / "edge-7.key_secret"
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    public_key, _ = load_key_pair(secret_path)
    assert load_public_keys(tmp_path) == {"edge-7": public_key}
    assert "edge-7.key_secret" in capsys.readouterr().out


def test_keygen_refuses_to_overwrite_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keygen", "--node-id", "edge-7", "--dir", str(tmp_path)]) == 0
    before = (tmp_path / "edge-7.key_secret").read_bytes()
    assert main(["keygen", "--node-id", "edge-7", "--dir", str(tmp_path)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "edge-7.key_secret").read_bytes() == before


def test_keygen_refuses_a_bad_node_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "--node-id", "no spaces", "--dir", str(tmp_path)]) == 1
    assert "node id" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
