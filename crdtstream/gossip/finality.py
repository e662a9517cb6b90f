"""Window finality: when a window's value can no longer change on this node.

A window ``[start, end)`` is final here once, for every live member ``m``:

1. ``m``'s watermark (its newest time minus the allowed lateness, the store's rule) has reached
   ``end`` — from then on ``m`` accepts no write to the window, so the number of writes it made
   there is frozen; and
2. this node has merged all of them: ``m`` advertises its own write count for the window
   (a :class:`~crdtstream.gossip.messages.Progress` record) and the local per-window version
   vector (``lattice.window_versions(start)``) holds at least that many for ``m``'s replica.

Members that are dead or left do not hold finality back; whatever of theirs was merged stays.
This is causal stability (Baquero, Almeida, Shoker, "Making operation-based CRDTs
operation-based", 2014) restricted to one window and made fault tolerant by membership, as the
research notes on window finality suggest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from crdtstream.gossip.messages import Progress

__all__ = ["ProgressTable", "window_is_final"]


def window_is_final(
    start_ms: int,
    end_ms: int,
    live_replicas: Iterable[str],
    progress: Mapping[str, Progress],
    merged_versions: Mapping[str, int],
) -> bool:
    """Whether the window ``[start_ms, end_ms)`` is final given what each live replica
    advertised (``progress``) and what this node merged (``merged_versions``)."""
    for replica in live_replicas:
        record = progress.get(replica)
        if record is None or record.watermark_ms < end_ms:
            return False
        if merged_versions.get(replica, 0) < record.window_writes.get(start_ms, 0):
            return False
    return True


@dataclass(slots=True)
class ProgressTable:
    """The newest progress record known for each replica (records join by pointwise max).

    ``keep_windows`` bounds how many window counts a record carries: only the newest windows
    can still be waiting for finality.
    """

    keep_windows: int
    records: dict[str, Progress]

    def __init__(self, keep_windows: int) -> None:
        self.keep_windows = keep_windows
        self.records = {}

    def merge(self, record: Progress) -> bool:
        """Join ``record`` in; True when it taught us something."""
        current = self.records.get(record.replica)
        joined = record if current is None else current.join(record)
        joined = self._trim(joined)
        if joined == current:
            return False
        self.records[record.replica] = joined
        return True

    def _trim(self, record: Progress) -> Progress:
        if len(record.window_writes) <= self.keep_windows:
            return record
        newest = sorted(record.window_writes)[-self.keep_windows :]
        writes = {start: record.window_writes[start] for start in newest}
        return Progress(record.replica, record.watermark_ms, writes)
