"""The disk, used by the driver only: the Raft write-ahead log (:mod:`.wal`, format and replay in
:mod:`.wal_format`), store snapshots (:mod:`.snapshot`) and crash-safe file writes (:mod:`.files`).

The pure packages never import this one; the driver (:mod:`crdtstream.node`) opens what it needs
here and hands the cores objects that satisfy their protocols (``DurableStorage`` for Raft).
"""
