"""Agent settings: a TOML file, overridden by command-line flags, into frozen configs.

Every error is a :class:`~crdtstream.errors.ConfigError` naming the field, so the agent can
print one line and exit non-zero. The TOML file has top-level agent fields (``node_id``,
``listen``, ``peers``, ``statsd``, ``http``, ``data_dir``, ``raft_voters``), ordered policy
rules (``[[policy]]`` tables with ``pattern`` and ``mode``) and one table per subsystem whose
keys are the fields of its config class (``[window] size_ms = 10000``).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crdtstream.config import (
    MODES,
    GossipConfig,
    MembershipConfig,
    PolicyRule,
    RaftConfig,
    TransportConfig,
    WindowConfig,
)
from crdtstream.errors import ConfigError
from crdtstream.node import NodeConfig, parse_peer

__all__ = [
    "AGENT_FIELDS",
    "NODE_TUNING",
    "AgentSettings",
    "load_settings",
    "parse_host_port",
    "parse_policy",
]

_SECTIONS: dict[str, type[Any]] = {
    "window": WindowConfig,
    "gossip": GossipConfig,
    "membership": MembershipConfig,
    "transport": TransportConfig,
    "raft": RaftConfig,
}
AGENT_FIELDS = (
    "node_id",
    "listen",
    "peers",
    "statsd",
    "http",
    "data_dir",
    "raft_voters",
    "policy",
)
"""Top-level fields of the TOML file; each has a command-line flag of the same name."""
NODE_TUNING = (
    "snapshot_interval_ms",
    "tick_interval_ms",
    "receive_batch_packets",
    "strong_timeout_ms",
    "quorum_timeout_ms",
    "quorum_cluster_size",
    "event_time_future_ms_max",
    "statsd_sync_ms",
    "durability",
)
"""The node's own settings a ``[node]`` table may set (the rest have fields of their own)."""
_TOP_LEVEL = {*AGENT_FIELDS, *_SECTIONS, "node"}


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """The node's configuration plus the agent's own listening addresses (``None`` = off)."""

    node: NodeConfig
    statsd: tuple[str, int] | None
    http: tuple[str, int] | None


def parse_host_port(text: str, field_path: str) -> tuple[str, int]:
    """``"127.0.0.1:8125"`` -> ``("127.0.0.1", 8125)``; a ConfigError names ``field_path``."""
    host, separator, port_text = text.rpartition(":")
    if not separator or not host or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ConfigError(f"{field_path}: must be HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port_text)


def _section(name: str, values: object) -> Any:
    config_class = _SECTIONS[name]
    if not isinstance(values, Mapping):
        raise ConfigError(f"{name}: must be a table, got {values!r}")
    known = {f.name for f in dataclasses.fields(config_class)}
    for key in values:
        if key not in known:
            raise ConfigError(f"{name}.{key}: unknown field (known: {', '.join(sorted(known))})")
    try:
        return config_class(**values)
    except TypeError as error:
        raise ConfigError(f"{name}: {error}") from error


def _node_tuning(values: object) -> dict[str, Any]:
    """The ``[node]`` table: integers for the fields of :data:`NODE_TUNING`, a string for
    ``durability`` (``NodeConfig`` checks its value)."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"node: must be a table, got {values!r}")
    for key, value in values.items():
        if key not in NODE_TUNING:
            raise ConfigError(f"node.{key}: unknown field (known: {', '.join(NODE_TUNING)})")
        if key == "durability":
            if not isinstance(value, str):
                raise ConfigError(f"node.durability: must be a string, got {value!r}")
        elif type(value) is not int:
            raise ConfigError(f"node.{key}: must be an integer, got {value!r}")
    return dict(values)


def _read_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as error:
        raise ConfigError(f"config: cannot read {path}: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config: {path} is not valid TOML: {error}") from error
    for key in data:
        if key not in _TOP_LEVEL:
            raise ConfigError(f"{key}: unknown field")
    return data


def _string_list(data: Mapping[str, Any], name: str) -> list[str]:
    values = data.get(name, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{name}: must be a list of strings, got {values!r}")
    return values


def parse_policy(entries: object) -> tuple[PolicyRule, ...]:
    """Policy rules from ``PATTERN=MODE`` strings or ``{pattern, mode}`` tables, in order."""
    if not isinstance(entries, list):
        raise ConfigError(f"policy: must be a list of rules, got {entries!r}")
    rules = []
    for entry in entries:
        if isinstance(entry, str):
            pattern, _, mode = entry.rpartition("=")
        elif isinstance(entry, Mapping):
            pattern, mode = entry.get("pattern", ""), entry.get("mode", "")
        else:
            raise ConfigError(f"policy: a rule must be PATTERN=MODE or a table, got {entry!r}")
        if mode not in MODES:
            raise ConfigError(f"policy.mode: must be one of {MODES}, got {mode!r}")
        rules.append(PolicyRule(str(pattern), mode))
    return tuple(rules)


def load_settings(path: Path | None, overrides: Mapping[str, Any]) -> AgentSettings:
    """Merge the TOML file at ``path`` with flag ``overrides`` (None values are ignored)."""
    data = _read_file(path)
    data.update({key: value for key, value in overrides.items() if value not in (None, [])})
    node_id = data.get("node_id")
    if not isinstance(node_id, str):
        raise ConfigError(f"node_id: required, got {node_id!r}")
    listen = data.get("listen", "tcp://127.0.0.1:7946")
    peers = _string_list(data, "peers")
    voters = _string_list(data, "raft_voters")
    if any("=" not in voter for voter in voters):
        raise ConfigError(f"raft_voters: each must be ID=ADDRESS, got {voters!r}")
    sections = {name: _section(name, data[name]) for name in _SECTIONS if name in data}
    tuning = _node_tuning(data.get("node", {}))
    data_dir = data.get("data_dir")
    node = NodeConfig(
        node_id=node_id,
        listen_address=str(listen),
        peers=tuple(parse_peer(p) for p in peers),
        data_dir=None if data_dir is None else Path(str(data_dir)),
        raft_voters=tuple(parse_peer(v) for v in voters),
        policy=parse_policy(data.get("policy", [])),
        **sections,
        **tuning,
    )
    statsd = data.get("statsd")
    http = data.get("http")
    return AgentSettings(
        node=node,
        statsd=None if statsd is None else parse_host_port(str(statsd), "statsd"),
        http=None if http is None else parse_host_port(str(http), "http"),
    )
