"""Raft for the ``strong`` key mode: a pure core in the shape of etcd-io/raft.

The core never reads a clock, touches a socket or a file, or uses global randomness: time enters
as ``tick()``, randomness as an injected ``random.Random``, and everything the node wants done
leaves as a :class:`~crdtstream.raft.types.Ready`. The driver persists it, then sends its
messages, then applies it, then calls ``advance``.

Modules, from the driver's handle inwards:

* ``rawnode``: :class:`~crdtstream.raft.rawnode.RawNode`, the driver's handle.
* ``raft``, ``follower``, ``leader``: the state machine, with each role's step function.
* ``log``, ``progress``, ``read_only``: the log and its unstable tail, per-follower progress and
  flow control, and the heartbeat rounds that confirm linearizable reads.
* ``types``: messages, entries, hard state, snapshots, ``Ready``, and their wire forms.
* ``storage``: the read-only storage protocol the core needs, and ``MemoryStorage``.

Every node is bootstrapped with the cluster's *initial* voter set (in its storage's first
snapshot, at index 0); later membership changes are log entries applied on top of it, so a node
joining later starts from the same initial set and replays the changes, or receives a snapshot.
"""
