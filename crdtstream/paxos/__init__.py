"""Per-key CASPaxos (Rystsov 2018): a second backend for strong keys, without a log or an
election. Each key has a preferred proposer (the first acceptor of a rendezvous ranking of the
key) that the other nodes forward to; when it does not answer in time they propose themselves.

Pure, in the shape of :mod:`crdtstream.raft`: messages in, messages out as data, randomness
injected, time as ticks, acceptor records handed to the driver to persist before any answer.
"""

from crdtstream.paxos.acceptor import Acceptor
from crdtstream.paxos.node import (
    Outcome,
    PaxosConfig,
    PaxosNode,
    ProposerCounters,
    Ready,
    proposer_ranking,
)
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
    "ProposerCounters",
    "Ready",
    "proposer_ranking",
]
