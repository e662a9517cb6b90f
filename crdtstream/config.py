"""Configuration: one frozen, validated dataclass per subsystem, with units in field names.

Every class validates itself in ``__post_init__`` and raises :class:`ConfigError` whose message
names the field (``window.size_ms: must be > 0, got 0``), so the agent can print one line and
exit. Named presets (``local()``, ``lan()``) give sensible starting points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from crdtstream.errors import ConfigError

__all__ = [
    "GossipConfig",
    "MembershipConfig",
    "Mode",
    "PolicyRule",
    "RaftConfig",
    "TransportConfig",
    "WindowConfig",
    "require",
]

Mode = Literal["eventual", "quorum", "strong", "bounded"]
MODES: tuple[Mode, ...] = ("eventual", "quorum", "strong", "bounded")

Backend = Literal["raft", "paxos"]
BACKENDS: tuple[Backend, ...] = ("raft", "paxos")
"""How a strong key is replicated: the Raft log (default) or per-key CASPaxos."""


def require(condition: bool, field_path: str, rule: str, got: object) -> None:
    """Raise :class:`ConfigError` ``"<field_path>: <rule>, got <got>"`` unless ``condition``."""
    if not condition:
        raise ConfigError(f"{field_path}: {rule}, got {got!r}")


@dataclass(frozen=True, slots=True)
class WindowConfig:
    """How events are cut into windows and how long windows are kept.

    ``size_ms`` is the window length; ``slide_ms`` equals it for tumbling windows and divides it
    for hopping windows. The watermark is the newest time seen (event or clock) minus
    ``allowed_lateness_ms``; an event whose slice ends at or before it is late: counted and
    reported, not applied. The newest ``retention_windows``
    windows are kept. ``distinct_precision`` is the HyperLogLog precision of ``distinct`` keys
    and ``distribution_relative_accuracy`` the bucket accuracy of ``distribution`` keys; every
    node of a cluster must use the same two values (their states cannot be merged otherwise).
    """

    size_ms: int = 10_000
    slide_ms: int | None = None
    allowed_lateness_ms: int = 5_000
    retention_windows: int = 60
    distinct_precision: int = 12
    distribution_relative_accuracy: float = 0.01

    def __post_init__(self) -> None:
        require(self.size_ms > 0, "window.size_ms", "must be > 0", self.size_ms)
        slide = self.size_ms if self.slide_ms is None else self.slide_ms
        require(slide > 0, "window.slide_ms", "must be > 0", self.slide_ms)
        require(self.size_ms % slide == 0, "window.slide_ms", "must divide size_ms", self.slide_ms)
        require(
            self.allowed_lateness_ms >= 0,
            "window.allowed_lateness_ms",
            "must be >= 0",
            self.allowed_lateness_ms,
        )
        require(
            self.retention_windows >= 1,
            "window.retention_windows",
            "must be >= 1",
            self.retention_windows,
        )
        require(
            4 <= self.distinct_precision <= 18,
            "window.distinct_precision",
            "must be in [4, 18]",
            self.distinct_precision,
        )
        require(
            0.0005 <= self.distribution_relative_accuracy < 1.0,
            "window.distribution_relative_accuracy",
            "must be in [0.0005, 1)",
            self.distribution_relative_accuracy,
        )

    @property
    def effective_slide_ms(self) -> int:
        """The slide; equal to ``size_ms`` for tumbling windows."""
        return self.size_ms if self.slide_ms is None else self.slide_ms


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Limits every transport honours (see :mod:`crdtstream.transport`).

    With ``curve_enabled`` the ZeroMQ transport encrypts and authenticates every connection:
    ``curve_secret_key_path`` is this node's key pair (as written by ``crdtstream keygen``, mode
    0600) and ``curve_public_keys_dir`` holds one ``<node id>.key`` file per allowed peer.
    """

    max_payload_bytes: int = 1 << 20
    send_queue_messages: int = 1_000
    receive_queue_messages: int = 10_000
    reconnect_ms_min: int = 100
    reconnect_ms_max: int = 5_000
    curve_enabled: bool = False
    curve_secret_key_path: str | None = None
    curve_public_keys_dir: str | None = None

    def __post_init__(self) -> None:
        require(
            1024 <= self.max_payload_bytes <= 64 << 20,
            "transport.max_payload_bytes",
            "must be in [1 KiB, 64 MiB]",
            self.max_payload_bytes,
        )
        require(
            self.send_queue_messages >= 1,
            "transport.send_queue_messages",
            "must be >= 1",
            self.send_queue_messages,
        )
        require(
            self.receive_queue_messages >= 1,
            "transport.receive_queue_messages",
            "must be >= 1",
            self.receive_queue_messages,
        )
        require(
            0 < self.reconnect_ms_min <= self.reconnect_ms_max,
            "transport.reconnect_ms_min",
            "must be > 0 and <= reconnect_ms_max",
            self.reconnect_ms_min,
        )
        if self.curve_enabled:
            require(
                bool(self.curve_secret_key_path),
                "transport.curve_secret_key_path",
                "is required when curve_enabled",
                self.curve_secret_key_path,
            )
            require(
                bool(self.curve_public_keys_dir),
                "transport.curve_public_keys_dir",
                "is required when curve_enabled",
                self.curve_public_keys_dir,
            )


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """Delta-state anti-entropy: how often, to how many peers, and how large a message may be."""

    interval_ms: int = 200
    fanout: int = 3
    delta_buffer_groups: int = 1_024
    chunk_bytes_max: int = 256 * 1024

    def __post_init__(self) -> None:
        require(self.interval_ms > 0, "gossip.interval_ms", "must be > 0", self.interval_ms)
        require(self.fanout >= 1, "gossip.fanout", "must be >= 1", self.fanout)
        require(
            self.delta_buffer_groups >= 1,
            "gossip.delta_buffer_groups",
            "must be >= 1",
            self.delta_buffer_groups,
        )
        require(
            self.chunk_bytes_max >= 1024,
            "gossip.chunk_bytes_max",
            "must be >= 1024",
            self.chunk_bytes_max,
        )

    @classmethod
    def local(cls) -> GossipConfig:
        """Fast settings for a cluster on one machine."""
        return cls(interval_ms=50, fanout=3)

    @classmethod
    def lan(cls) -> GossipConfig:
        """Settings for a data-centre network."""
        return cls(interval_ms=200, fanout=3)


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    """SWIM failure detection, in protocol periods of ``probe_interval_ms``."""

    probe_interval_ms: int = 1_000
    probe_timeout_ms: int = 500
    indirect_checks: int = 3
    suspicion_multiplier: int = 4
    suspicion_max_timeout_multiplier: int = 6
    retransmit_multiplier: int = 4

    def __post_init__(self) -> None:
        require(
            self.probe_interval_ms > 0,
            "membership.probe_interval_ms",
            "must be > 0",
            self.probe_interval_ms,
        )
        require(
            0 < self.probe_timeout_ms <= self.probe_interval_ms,
            "membership.probe_timeout_ms",
            "must be > 0 and <= probe_interval_ms",
            self.probe_timeout_ms,
        )
        require(
            self.indirect_checks >= 0,
            "membership.indirect_checks",
            "must be >= 0",
            self.indirect_checks,
        )
        require(
            self.suspicion_multiplier >= 1,
            "membership.suspicion_multiplier",
            "must be >= 1",
            self.suspicion_multiplier,
        )

    @classmethod
    def local(cls) -> MembershipConfig:
        """Fast failure detection for a cluster on one machine."""
        return cls(probe_interval_ms=200, probe_timeout_ms=100)

    @classmethod
    def lan(cls) -> MembershipConfig:
        """memberlist's LAN defaults."""
        return cls()


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Raft timing in ticks (the driver maps one tick to ``tick_ms``) and flow-control limits."""

    tick_ms: int = 50
    election_timeout_ticks: int = 10
    heartbeat_ticks: int = 1
    max_inflight_appends: int = 64
    max_entries_per_append: int = 256
    snapshot_every_entries: int = 10_000
    pre_vote: bool = True
    check_quorum: bool = True
    max_append_bytes: int = 512 * 1024
    max_pending_reads: int = 65_536
    max_apply_bytes_per_ready: int = 4 << 20
    max_uncommitted_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        require(self.tick_ms > 0, "raft.tick_ms", "must be > 0", self.tick_ms)
        require(
            self.heartbeat_ticks >= 1,
            "raft.heartbeat_ticks",
            "must be >= 1",
            self.heartbeat_ticks,
        )
        require(
            self.election_timeout_ticks > self.heartbeat_ticks,
            "raft.election_timeout_ticks",
            "must be > heartbeat_ticks",
            self.election_timeout_ticks,
        )
        require(
            self.max_inflight_appends >= 1,
            "raft.max_inflight_appends",
            "must be >= 1",
            self.max_inflight_appends,
        )
        require(
            self.max_entries_per_append >= 1,
            "raft.max_entries_per_append",
            "must be >= 1",
            self.max_entries_per_append,
        )
        require(
            self.snapshot_every_entries >= 1,
            "raft.snapshot_every_entries",
            "must be >= 1",
            self.snapshot_every_entries,
        )
        require(
            self.max_append_bytes >= 1024,
            "raft.max_append_bytes",
            "must be >= 1024",
            self.max_append_bytes,
        )
        require(
            self.max_pending_reads >= 1,
            "raft.max_pending_reads",
            "must be >= 1",
            self.max_pending_reads,
        )
        require(
            self.max_apply_bytes_per_ready >= 1024,
            "raft.max_apply_bytes_per_ready",
            "must be >= 1024",
            self.max_apply_bytes_per_ready,
        )
        require(
            self.max_uncommitted_bytes >= 1024,
            "raft.max_uncommitted_bytes",
            "must be >= 1024",
            self.max_uncommitted_bytes,
        )


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One ordered glob rule of the key policy: keys matching ``pattern`` use ``mode``; a
    strong rule may name its ``backend`` (``raft`` unless it says ``paxos``).

    A ``bounded`` rule also gives the quota: at most ``limit`` units consumed per window of
    ``window_ms`` (aligned on the epoch), with each window's rights split evenly over
    ``members`` (node ids; every node must hold the same list, see
    :mod:`crdtstream.engine.bounded_mode`). The three fields belong to ``bounded`` rules only.
    """

    pattern: str
    mode: Mode = "eventual"
    backend: Backend = "raft"
    limit: int | None = None
    window_ms: int = 60_000
    members: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        require(bool(self.pattern), "policy.pattern", "must not be empty", self.pattern)
        require(self.mode in MODES, "policy.mode", f"must be one of {MODES}", self.mode)
        require(
            self.backend in BACKENDS, "policy.backend", f"must be one of {BACKENDS}", self.backend
        )
        require(
            self.backend == "raft" or self.mode == "strong",
            "policy.backend",
            "applies to strong rules only",
            self.backend,
        )
        if self.mode != "bounded":
            require(self.limit is None, "policy.limit", "applies to bounded rules only", self.limit)
            return
        require(
            type(self.limit) is int and self.limit >= 0,
            "policy.limit",
            "a bounded rule needs an integer limit >= 0",
            self.limit,
        )
        require(self.window_ms > 0, "policy.window_ms", "must be > 0", self.window_ms)
        require(
            bool(self.members) and len(set(self.members)) == len(self.members),
            "policy.members",
            "a bounded rule needs a non-empty list of distinct node ids",
            self.members,
        )
