"""crdtstream.crdt."""
