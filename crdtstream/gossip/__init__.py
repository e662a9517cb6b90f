"""crdtstream.gossip."""
