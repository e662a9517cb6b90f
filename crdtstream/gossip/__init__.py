"""Gossip: the eventual mode's pure protocol cores.

- :mod:`.antientropy` — δ-interval anti-entropy (delta buffer, per-peer acks, full-state
  fallback, back-propagation and redundancy avoided, chunked transfers);
- :mod:`.membership` — SWIM failure detection with Lifeguard's refinements (its table's rows,
  suspicion timers and broadcast queue in :mod:`.members`);
- :mod:`.finality` — when a window can no longer change on this node;
- :mod:`.catalog` — the key catalog as a pycrdt document (the only ``pycrdt`` import);
- :mod:`.core` — :class:`~crdtstream.gossip.core.GossipCore`, all of the above behind one
  ``tick(now_ms)`` / ``step(source, payload, now_ms)`` pair, bytes in and bytes out;
- :mod:`.lattice` — the protocol a replicated lattice satisfies (the windowed store does);
- :mod:`.reference` — a small lattice of windowed counters for simulations and benchmarks.

Nothing here reads a clock, sleeps, touches a socket or a file, or uses global randomness.
"""
