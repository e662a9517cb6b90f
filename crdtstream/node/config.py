"""The configuration of one node: its id, listen address, known peers and data directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from crdtstream.config import (
    GossipConfig,
    MembershipConfig,
    PolicyRule,
    RaftConfig,
    TransportConfig,
    WindowConfig,
    require,
)
from crdtstream.engine.config import EngineConfig
from crdtstream.ids import is_valid_node_id

__all__ = ["DURABILITY_LEVELS", "NodeConfig", "PeerAddress", "parse_peer"]

DURABILITY_LEVELS = ("fsync", "none")
"""``node.durability``: log and fsync writes before acknowledging them, or keep them in memory
until the next snapshot."""


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """A peer known before it is met: its node id (or a seed alias) and its address."""

    node_id: str
    address: str


def parse_peer(text: str) -> PeerAddress:
    """Parse ``ID=ADDRESS`` or a bare ``ADDRESS`` (a seed whose id is learned when it answers).

    A bare address gets the alias ``seed-<n>``-style id derived from the address, used only to
    send the join request; the seed's real id arrives with its reply.
    """
    node_id, separator, address = text.partition("=")
    if not separator:
        address = text
        node_id = "seed-" + "".join(ch if ch.isalnum() else "-" for ch in text)[-56:]
    require(bool(address), "node.peer", "must be ID=ADDRESS or ADDRESS", text)
    require(is_valid_node_id(node_id), "node.peer", "has an invalid node id", text)
    return PeerAddress(node_id, address)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a :class:`~crdtstream.node.Node` needs besides its transport and clock.

    ``data_dir`` None keeps everything in memory (tests, demos). ``snapshot_interval_ms`` is how
    often the store is written to disk; ``tick_interval_ms`` how often the protocol timers run.
    ``raft_voters`` (may include this node) enable strong mode for keys that ``policy`` sends
    there; a strong request not answered within ``strong_timeout_ms`` fails as unavailable, and
    so does a quorum request not confirmed by a majority within ``quorum_timeout_ms``. Quorum
    majorities count the nodes membership knows of, and at least ``quorum_cluster_size`` when
    set: a node that has not met everyone yet (started with seeds only) then never takes a
    minority for a majority. A consumption of a ``bounded`` key that this node's rights do not
    cover, nor peers' transfers within ``bounded_timeout_ms``, is refused (``no_rights``).
    An event stamped more than ``event_time_future_ms_max`` ahead of the node's clock is
    refused (counted), so one bad clock cannot close every window.

    ``durability`` ``"fsync"`` (with a data directory) logs every eventual and quorum write in
    the local write-ahead log and fsyncs it before the write is acknowledged, once per pump
    (group commit); statsd lines, which have no acknowledgement, are synced at least every
    ``statsd_sync_ms``; so is every change of this node's ``bounded`` rows (spends, grants,
    transfers), before it is answered or sent, and a restarted node resumes its rows. ``"none"``
    turns the log off: writes since the last snapshot are lost in a crash, and every run takes
    fresh bounded rows (the rights left in a crashed run's row are stranded until the window
    ends, or until a strong decision retires the row). The log starts afresh at every snapshot,
    and a snapshot is also taken as soon as the log holds ``log_bytes_max`` bytes, which bounds
    the log's size on disk and the replay at restart under a heavy write load.
    """

    node_id: str
    listen_address: str
    peers: tuple[PeerAddress, ...] = ()
    data_dir: Path | None = None
    window: WindowConfig = field(default_factory=WindowConfig)
    gossip: GossipConfig = field(default_factory=GossipConfig)
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    raft: RaftConfig = field(default_factory=RaftConfig)
    snapshot_interval_ms: int = 5_000
    tick_interval_ms: int = 20
    receive_batch_packets: int = 1_000
    raft_voters: tuple[PeerAddress, ...] = ()
    policy: tuple[PolicyRule, ...] = ()
    strong_timeout_ms: int = 5_000
    quorum_timeout_ms: int = 2_000
    bounded_timeout_ms: int = 1_000
    quorum_cluster_size: int = 0
    event_time_future_ms_max: int = 300_000
    durability: str = "fsync"
    statsd_sync_ms: int = 200
    log_bytes_max: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        require(is_valid_node_id(self.node_id), "node.node_id", "is not a valid id", self.node_id)
        require(bool(self.listen_address), "node.listen", "must not be empty", self.listen_address)
        require(
            self.snapshot_interval_ms > 0,
            "node.snapshot_interval_ms",
            "must be > 0",
            self.snapshot_interval_ms,
        )
        require(
            self.tick_interval_ms > 0, "node.tick_interval_ms", "must be > 0", self.tick_interval_ms
        )
        require(
            self.strong_timeout_ms > 0,
            "node.strong_timeout_ms",
            "must be > 0",
            self.strong_timeout_ms,
        )
        require(
            self.quorum_timeout_ms > 0,
            "node.quorum_timeout_ms",
            "must be > 0",
            self.quorum_timeout_ms,
        )
        require(
            self.bounded_timeout_ms > 0,
            "node.bounded_timeout_ms",
            "must be > 0",
            self.bounded_timeout_ms,
        )
        require(
            self.quorum_cluster_size >= 0,
            "node.quorum_cluster_size",
            "must be >= 0 (0: as many nodes as membership knows)",
            self.quorum_cluster_size,
        )
        require(
            self.event_time_future_ms_max >= 0,
            "node.event_time_future_ms_max",
            "must be >= 0",
            self.event_time_future_ms_max,
        )
        require(
            self.durability in DURABILITY_LEVELS,
            "node.durability",
            f"must be one of {', '.join(DURABILITY_LEVELS)}",
            self.durability,
        )
        require(self.statsd_sync_ms > 0, "node.statsd_sync_ms", "must be > 0", self.statsd_sync_ms)
        require(self.log_bytes_max > 0, "node.log_bytes_max", "must be > 0", self.log_bytes_max)
        require(
            self.receive_batch_packets >= 1,
            "node.receive_batch_packets",
            "must be >= 1",
            self.receive_batch_packets,
        )

    def engine_config(self) -> EngineConfig:
        """The protocol settings the engine runs with (everything but disk and transport)."""
        return EngineConfig(
            node_id=self.node_id,
            listen_address=self.listen_address,
            seeds=tuple(peer.node_id for peer in self.peers),
            window=self.window,
            gossip=self.gossip,
            membership=self.membership,
            raft=self.raft,
            tick_interval_ms=self.tick_interval_ms,
            raft_voters=tuple(peer.node_id for peer in self.raft_voters),
            policy=self.policy,
            strong_timeout_ms=self.strong_timeout_ms,
            quorum_timeout_ms=self.quorum_timeout_ms,
            bounded_timeout_ms=self.bounded_timeout_ms,
            quorum_cluster_size=self.quorum_cluster_size,
            event_time_future_ms_max=self.event_time_future_ms_max,
        )
