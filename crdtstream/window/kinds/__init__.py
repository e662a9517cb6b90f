"""Per-kind state of the windowed store: dense (replica x key) matrices, HLL rows, cell objects."""
