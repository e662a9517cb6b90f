"""What the engine needs to know: the protocol settings of one node, without its disk or its
transport (the driver's :class:`~crdtstream.node.NodeConfig` builds one)."""

from __future__ import annotations

from dataclasses import dataclass, field

from crdtstream.config import (
    GossipConfig,
    MembershipConfig,
    PolicyRule,
    RaftConfig,
    WindowConfig,
)

__all__ = ["EngineConfig"]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """One node's protocol settings.

    ``seeds`` are the node ids of the peers known before they are met; ``raft_voters`` the node
    ids of the Raft voter set (empty: no strong mode). ``tick_interval_ms`` is how often the
    gossip timers run. A strong request not answered within ``strong_timeout_ms`` fails as
    unavailable, as does a quorum request not confirmed within ``quorum_timeout_ms``; a quorum
    counts its majority against at least ``quorum_cluster_size`` nodes. An event stamped more
    than ``event_time_future_ms_max`` ahead of the clock is refused. With ``log_writes`` an
    eventual or quorum write is acknowledged only once the driver made the store's changes
    durable (:meth:`Engine.logged <crdtstream.engine.Engine.logged>`). A consumption of a
    ``bounded`` key that this node's rights do not cover, nor peers' transfers within
    ``bounded_timeout_ms``, is refused.
    """

    node_id: str
    listen_address: str
    seeds: tuple[str, ...] = ()
    window: WindowConfig = field(default_factory=WindowConfig)
    gossip: GossipConfig = field(default_factory=GossipConfig)
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    raft: RaftConfig = field(default_factory=RaftConfig)
    tick_interval_ms: int = 20
    raft_voters: tuple[str, ...] = ()
    policy: tuple[PolicyRule, ...] = ()
    strong_timeout_ms: int = 5_000
    quorum_timeout_ms: int = 2_000
    quorum_cluster_size: int = 0
    event_time_future_ms_max: int = 300_000
    log_writes: bool = False
    bounded_timeout_ms: int = 1_000
