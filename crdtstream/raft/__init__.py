"""crdtstream.raft."""
