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
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from crdtstream.agent.aggregates import DEFAULT_IDLE_TTL_MS
from crdtstream.agent.mapping import Mapper, load_mapping
from crdtstream.config import (
    BACKENDS,
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
    "DEFAULT_LISTEN",
    "NODE_TUNING",
    "AgentSettings",
    "StatsdSettings",
    "load_settings",
    "parse_host_port",
    "parse_policy",
    "parse_statsd_address",
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
    "graphite",
    "mapping_config",
    "metrics_idle_ttl_ms",
)
"""Top-level fields of the TOML file; each has a command-line flag of the same name."""
NODE_TUNING = (
    "snapshot_interval_ms",
    "tick_interval_ms",
    "receive_batch_packets",
    "strong_timeout_ms",
    "quorum_timeout_ms",
    "bounded_timeout_ms",
    "quorum_cluster_size",
    "event_time_future_ms_max",
    "statsd_sync_ms",
    "log_bytes_max",
    "durability",
)
"""The node's own settings a ``[node]`` table may set (the rest have fields of their own)."""
_TOP_LEVEL = {*AGENT_FIELDS, *_SECTIONS, "node"}
DEFAULT_LISTEN = "tcp://127.0.0.1:7946"


StatsdScheme = Literal["udp", "unix", "tcp"]


@dataclass(frozen=True, slots=True)
class StatsdSettings:
    """The statsd input: where it listens and how much it may hold (the ``[statsd]`` table).

    ``address`` is ``HOST:PORT`` or ``udp://HOST:PORT`` (UDP), ``unix:///path`` (a Unix
    datagram socket, DogStatsD style) or ``tcp://HOST:PORT`` (newline-delimited lines).
    ``receive_buffer_bytes`` is asked of the kernel for the socket (``SO_RCVBUF``; Linux caps it
    at ``net.core.rmem_max`` unless the process may force it, and the granted size is
    reported). ``queue_bytes_max`` bounds what waits between the reader and the node: beyond it
    whole read batches are dropped and counted. ``apply_interval_ms`` is how long a small batch
    may wait for company before it is parsed (the parse has a fixed cost of most of a
    millisecond per call, so at low rates datagrams are applied five times a second, not one by
    one; a line's window is seconds long, so 200 ms later changes nothing but CPU use);
    ``apply_bytes_max`` bounds one parse call, so the node's timers run between calls under any
    load.
    ``tcp_line_bytes_max`` bounds a line on a TCP connection (longer ones are dropped and
    counted). ``readers`` > 1 opens that many UDP sockets on the port (``SO_REUSEPORT``), each
    drained by its own thread into the same queue.
    """

    scheme: StatsdScheme
    host: str = ""
    port: int = 0
    path: str = ""
    receive_buffer_bytes: int = 8 << 20
    queue_bytes_max: int = 64 << 20
    apply_interval_ms: int = 200
    apply_bytes_max: int = 256 << 10
    tcp_line_bytes_max: int = 65_536
    readers: int = 1

    def __post_init__(self) -> None:
        for name in (
            "readers",
            "receive_buffer_bytes",
            "queue_bytes_max",
            "apply_interval_ms",
            "apply_bytes_max",
            "tcp_line_bytes_max",
        ):
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                raise ConfigError(f"statsd.{name}: must be an integer > 0, got {value!r}")

    @property
    def address(self) -> str:
        """The address as a URL (``udp://127.0.0.1:8125``, ``unix:///run/dsd.socket``)."""
        if self.scheme == "unix":
            return f"unix://{self.path}"
        return f"{self.scheme}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """The node's configuration plus the agent's own inputs (``None`` = off)."""

    node: NodeConfig
    statsd: StatsdSettings | None
    http: tuple[str, int] | None
    graphite: tuple[str, int] | None = None
    mapping: Mapper | None = None
    metrics_idle_ttl_ms: int = DEFAULT_IDLE_TTL_MS


def parse_host_port(text: str, field_path: str) -> tuple[str, int]:
    """``"127.0.0.1:8125"`` -> ``("127.0.0.1", 8125)``; a ConfigError names ``field_path``."""
    host, separator, port_text = text.rpartition(":")
    if not separator or not host or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ConfigError(f"{field_path}: must be HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port_text)


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _accepts(hint: object, value: object) -> bool:
    """Whether a TOML value fits a config field's type (a boolean is never a number)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return True
        if option is float and type(value) in (int, float):
            return True
        if option in (int, bool, str) and type(value) is option:
            return True
    return False


def _expected(hint: object) -> str:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    names = [_TYPE_NAMES.get(option, str(option)) for option in options if option is not type(None)]
    return " or ".join(names)


def parse_statsd_address(text: str, field_path: str = "statsd") -> StatsdSettings:
    """``HOST:PORT``, ``udp://HOST:PORT``, ``tcp://HOST:PORT`` or ``unix:///path`` into
    settings with the default limits; a ConfigError names ``field_path``."""
    scheme, separator, rest = text.partition("://")
    if not separator:
        scheme, rest = "udp", text
    if scheme == "unix":
        if not rest.startswith("/"):
            raise ConfigError(f"{field_path}: unix:// needs an absolute path, got {text!r}")
        return StatsdSettings("unix", path=rest)
    if scheme not in ("udp", "tcp"):
        raise ConfigError(f"{field_path}: scheme must be udp, tcp or unix, got {text!r}")
    host, port = parse_host_port(rest, field_path)
    return StatsdSettings("udp" if scheme == "udp" else "tcp", host=host, port=port)


_STATSD_LIMITS = (
    "readers",
    "receive_buffer_bytes",
    "queue_bytes_max",
    "apply_interval_ms",
    "apply_bytes_max",
    "tcp_line_bytes_max",
)


def _statsd(value: object, address_override: object) -> StatsdSettings | None:
    """The ``statsd`` field: an address string, or a ``[statsd]`` table with ``address`` and
    limits; the ``--statsd`` flag replaces the address and keeps the table's limits."""
    table: Mapping[str, Any]
    if isinstance(value, Mapping):
        table = value
    elif value is None or isinstance(value, str):
        table = {} if value is None else {"address": value}
    else:
        raise ConfigError(f"statsd: must be an address or a table, got {value!r}")
    for key in table:
        if key != "address" and key not in _STATSD_LIMITS:
            known = ", ".join(("address", *_STATSD_LIMITS))
            raise ConfigError(f"statsd.{key}: unknown field (known: {known})")
    address = address_override if address_override is not None else table.get("address")
    if address is None:
        return None
    if not isinstance(address, str):
        raise ConfigError(f"statsd.address: must be a string, got {address!r}")
    limits = {key: table[key] for key in _STATSD_LIMITS if key in table}
    return dataclasses.replace(parse_statsd_address(address, "statsd"), **limits)


def _section(name: str, values: object) -> Any:
    config_class = _SECTIONS[name]
    if not isinstance(values, Mapping):
        raise ConfigError(f"{name}: must be a table, got {values!r}")
    known = {f.name for f in dataclasses.fields(config_class)}
    hints = typing.get_type_hints(config_class)
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{name}.{key}: unknown field (known: {', '.join(sorted(known))})")
        if not _accepts(hints[key], value):
            raise ConfigError(f"{name}.{key}: must be {_expected(hints[key])}, got {value!r}")
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
    """Policy rules from ``PATTERN=MODE`` (or ``PATTERN=strong/paxos``) strings or
    ``{pattern, mode, backend}`` tables, in order."""
    if not isinstance(entries, list):
        raise ConfigError(f"policy: must be a list of rules, got {entries!r}")
    rules = []
    for entry in entries:
        backend = "raft"
        if isinstance(entry, str):
            pattern, _, mode = entry.rpartition("=")
            mode, _, backend = mode.partition("/")  # PATTERN=strong/paxos
            backend = backend or "raft"
        elif isinstance(entry, Mapping):
            pattern, mode = entry.get("pattern", ""), entry.get("mode", "")
            backend = entry.get("backend", "raft")
        else:
            raise ConfigError(f"policy: a rule must be PATTERN=MODE or a table, got {entry!r}")
        if mode not in MODES:
            raise ConfigError(f"policy.mode: must be one of {MODES}, got {mode!r}")
        if backend not in BACKENDS:
            raise ConfigError(f"policy.backend: must be one of {BACKENDS}, got {backend!r}")
        if mode == "bounded":
            rules.append(_bounded_rule(str(pattern), entry))
        else:
            rules.append(PolicyRule(str(pattern), mode, backend))
    return tuple(rules)


def _bounded_rule(pattern: str, entry: object) -> PolicyRule:
    """A ``bounded`` rule: a table with ``limit``, ``members`` and optionally ``window_ms``."""
    if not isinstance(entry, Mapping):
        raise ConfigError("policy: a bounded rule is a table with limit and members")
    members = _string_list(entry, "members")
    window_ms = entry.get("window_ms", 60_000)
    return PolicyRule(
        pattern, "bounded", limit=entry.get("limit"), window_ms=window_ms, members=tuple(members)
    )


def load_settings(path: Path | None, overrides: Mapping[str, Any]) -> AgentSettings:
    """Merge the TOML file at ``path`` with flag ``overrides`` (None values are ignored)."""
    data = _read_file(path)
    statsd_table = data.get("statsd")
    data.update({key: value for key, value in overrides.items() if value not in (None, [])})
    node_id = data.get("node_id")
    if not isinstance(node_id, str):
        raise ConfigError(f"node_id: required, got {node_id!r}")
    for field_name in ("listen", "http", "data_dir", "graphite", "mapping_config"):
        if field_name in data and not isinstance(data[field_name], str):
            raise ConfigError(f"{field_name}: must be a string, got {data[field_name]!r}")
    listen = data.get("listen", DEFAULT_LISTEN)
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
    http = data.get("http")
    graphite = data.get("graphite")
    mapping_config = data.get("mapping_config")
    return AgentSettings(
        node=node,
        statsd=_statsd(statsd_table, overrides.get("statsd")),
        http=None if http is None else parse_host_port(str(http), "http"),
        graphite=None if graphite is None else parse_host_port(str(graphite), "graphite"),
        mapping=None if mapping_config is None else load_mapping(Path(str(mapping_config))),
        metrics_idle_ttl_ms=_idle_ttl_ms(data.get("metrics_idle_ttl_ms", DEFAULT_IDLE_TTL_MS)),
    )


def _idle_ttl_ms(value: object) -> int:
    if type(value) is not int or value <= 0:
        raise ConfigError(f"metrics_idle_ttl_ms: must be a positive integer, got {value!r}")
    return value
