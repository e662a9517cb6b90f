"""CRDT types: counters, sets, registers, HyperLogLog and Distribution (see :mod:`.base`)."""

from __future__ import annotations

from crdtstream.crdt.base import Crdt
from crdtstream.crdt.bounded import BoundedCounter
from crdtstream.crdt.counters import GCounter, PNCounter
from crdtstream.crdt.distribution import Distribution
from crdtstream.crdt.hyperloglog import HyperLogLog
from crdtstream.crdt.registers import LWWRegister, MaxRegister, MinRegister
from crdtstream.crdt.sets import GSet, ORSet

__all__ = [
    "BoundedCounter",
    "Crdt",
    "Distribution",
    "GCounter",
    "GSet",
    "HyperLogLog",
    "LWWRegister",
    "MaxRegister",
    "MinRegister",
    "ORSet",
    "PNCounter",
]
