"""The agent's configuration: TOML plus flags, and one clear line for every bad value."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from crdtstream.agent.settings import load_settings
from crdtstream.cli import main
from crdtstream.errors import ConfigError


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_toml_and_flags_merge_with_flags_winning(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        'node_id = "n1"\nlisten = "tcp://127.0.0.1:7001"\nhttp = "127.0.0.1:8001"\n'
        'raft_voters = ["n1=tcp://127.0.0.1:7001"]\n'
        '[[policy]]\npattern = "quota.*"\nmode = "strong"\n'
        "[window]\nsize_ms = 60000\nallowed_lateness_ms = 1000\n"
        "[node]\nquorum_cluster_size = 5\nquorum_timeout_ms = 900\nbounded_timeout_ms = 700\n",
    )
    settings = load_settings(path, {"node_id": "n9", "peers": ["n2=tcp://127.0.0.1:7002"]})
    assert settings.node.node_id == "n9"
    assert settings.node.window.size_ms == 60_000
    assert (settings.node.quorum_cluster_size, settings.node.quorum_timeout_ms) == (5, 900)
    assert settings.node.bounded_timeout_ms == 700
    assert settings.node.engine_config().bounded_timeout_ms == 700
    assert settings.http == ("127.0.0.1", 8001)
    assert settings.statsd is None
    assert (settings.node.durability, settings.node.statsd_sync_ms) == ("fsync", 200)
    assert [(p.node_id, p.address) for p in settings.node.peers] == [("n2", "tcp://127.0.0.1:7002")]
    assert [(r.pattern, r.mode) for r in settings.node.policy] == [("quota.*", "strong")]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('node_id = "n1"\n[window]\nsize_ms = 0\n', "window.size_ms"),
        ('node_id = "n1"\n[window]\nsize_mss = 10\n', "window.size_mss"),
        ('node_id = "n1"\ncolour = "blue"\n', "colour"),
        ('node_id = "n1"\nhttp = "nowhere"\n', "http"),
        ('node_id = "n1"\npolicy = ["quota.*=fast"]\n', "policy.mode"),
        ('node_id = "n1"\nraft_voters = ["n2"]\n', "raft_voters"),
        ("listen = 'tcp://127.0.0.1:1'\n", "node_id"),
        ('node_id = "n1"\n[gossip]\nfanout = 0\n', "gossip.fanout"),
        ('node_id = "n1"\n[node]\nquorum_size = 3\n', "node.quorum_size"),
        ('node_id = "n1"\n[node]\nquorum_cluster_size = "3"\n', "node.quorum_cluster_size"),
        ('node_id = "n1"\n[node]\nquorum_cluster_size = -1\n', "node.quorum_cluster_size"),
        ('node_id = "n1"\n[node]\ndurability = "sometimes"\n', "node.durability"),
        ('node_id = "n1"\n[node]\ndurability = 1\n', "node.durability"),
        ('node_id = "n1"\n[node]\nstatsd_sync_ms = 0\n', "node.statsd_sync_ms"),
        ('node_id = "n1"\n[node]\nlog_bytes_max = 0\n', "node.log_bytes_max"),
        ("node_id = \n", "config"),
    ],
)
def test_bad_values_name_their_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}"):
        load_settings(_toml(tmp_path, text), {})


def test_agent_exits_two_with_one_line_on_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _toml(tmp_path, 'node_id = "n1"\n[window]\nsize_ms = -5\n')
    assert main(["agent", "--config", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error == "crdtstream agent: window.size_ms: must be > 0, got -5"


def test_agent_exits_two_naming_the_flag_when_it_cannot_listen(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["agent", "--node-id", "n1", "--listen", "bogus://here"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("crdtstream agent: --listen bogus://here: ")
    assert "\n" not in error


def _busy_port() -> socket.socket:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    return busy


def test_an_http_port_in_use_exits_two_naming_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with _busy_port() as busy:
        port = busy.getsockname()[1]
        listen = f"tcp://127.0.0.1:{_free_port()}"
        code = main(["agent", "--node-id", "n1", "--listen", listen, "--http", f"127.0.0.1:{port}"])
    assert code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"crdtstream agent: --http 127.0.0.1:{port}: address already in use"]


def test_an_unknown_host_exits_two_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    listen = f"tcp://127.0.0.1:{_free_port()}"
    code = main(
        ["agent", "--node-id", "n1", "--listen", listen, "--statsd", "no-such-host.invalid:8125"]
    )
    assert code == 2
    assert "crdtstream agent: --statsd udp://no-such-host.invalid:8125: " in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_a_wrong_toml_type_names_the_field_and_the_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^window.size_ms: must be an integer, got '10'$"):
        load_settings(_toml(tmp_path, 'node_id = "n1"\n[window]\nsize_ms = "10"\n'), {})
    with pytest.raises(ConfigError, match=r"^raft.pre_vote: must be true or false, got 1$"):
        load_settings(_toml(tmp_path, 'node_id = "n1"\n[raft]\npre_vote = 1\n'), {})


def test_version_and_help_show_defaults_and_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("crdtstream ")
    for command in ("agent", "query", "status", "keygen", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "example:" in text, command
    with pytest.raises(SystemExit):
        main(["agent", "--help"])
    assert "tcp://127.0.0.1:7946" in capsys.readouterr().out


def test_durability_is_a_node_setting(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        'node_id = "n1"\n[node]\ndurability = "none"\nstatsd_sync_ms = 50\nlog_bytes_max = 9\n',
    )
    settings = load_settings(path, {})
    node = settings.node
    assert (node.durability, node.statsd_sync_ms, node.log_bytes_max) == ("none", 50, 9)
