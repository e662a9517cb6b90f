"""The engine: pure, between the driver and the protocol cores (DESIGN.md section 2).

It owns the windowed store, the gossip core, the quorum core and the strong replica (or client)
of one node, routes every write and read by the key's mode, and exposes one API::

    ticket = engine.write("quota.api", "conditional_add", 1, limit=100)
    ticket = engine.read("api.hits", consistency="eventual")
    engine.tick(now_ms, monotonic_ms, received_packets)   # one clock reading per step
    frames = engine.take_outbox()                          # output leaves as data

A ticket completes with one :class:`Answer` type for every mode, or fails with a typed error
(:class:`~crdtstream.errors.UnavailableError`, :class:`~crdtstream.errors.RefusedError`,
:class:`~crdtstream.errors.KindConflictError`, :class:`~crdtstream.errors.InvalidValueError`).
:class:`crdtstream.node.Node` drives it over a real transport and clock and turns tickets into
awaitables.
"""

from crdtstream.engine.config import EngineConfig
from crdtstream.engine.counters import EngineCounters, IngestCounters
from crdtstream.engine.engine import Engine
from crdtstream.engine.operations import OPERATIONS, Operation
from crdtstream.engine.sessions import ClientSession
from crdtstream.engine.tickets import Answer, Ticket

__all__ = [
    "OPERATIONS",
    "Answer",
    "ClientSession",
    "Engine",
    "EngineConfig",
    "EngineCounters",
    "IngestCounters",
    "Operation",
    "Ticket",
]
