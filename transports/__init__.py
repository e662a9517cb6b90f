"""Implementations of :class:`crdtstream.transport.Transport`.

``memory`` is the seeded simulated network used by every simulation test; ``zeromq`` is the real
one (and the only module of the project that imports ``zmq``).
"""
