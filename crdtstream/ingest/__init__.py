"""crdtstream.ingest."""
