"""Per-key CASPaxos (Rystsov 2018): a leaderless second backend for strong keys.

Pure, in the shape of :mod:`crdtstream.raft`: messages in, messages out as data, randomness
injected, time as ticks, acceptor records handed to the driver to persist before any answer.
"""

from crdtstream.paxos.acceptor import Acceptor
from crdtstream.paxos.node import Outcome, PaxosConfig, PaxosNode, Ready
from crdtstream.paxos.types import AcceptorRecord, Ballot, Message, MessageType

__all__ = [
    "Acceptor",
    "AcceptorRecord",
    "Ballot",
    "Message",
    "MessageType",
    "Outcome",
    "PaxosConfig",
    "PaxosNode",
    "Ready",
]
