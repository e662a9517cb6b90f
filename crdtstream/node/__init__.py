"""The driver of a crdtstream node (see :mod:`crdtstream.node.node`)."""

from crdtstream.node.config import NodeConfig, PeerAddress, parse_peer
from crdtstream.node.node import DriverCounters, Node

__all__ = ["DriverCounters", "Node", "NodeConfig", "PeerAddress", "parse_peer"]
