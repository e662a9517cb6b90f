"""crdtstream.window."""
