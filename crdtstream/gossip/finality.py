"""Window finality: when a window's value can no longer change, on this node or any other.

The rule ("final means final"): a value reported final never changes afterwards, whatever
crashes, restarts and pauses happen. A window ``[start, end)`` is final on a node once:

1. **every reporter closed it** — the reporters are the current replicas of every member that
   has not left, members believed dead included. Each must have advertised (in its own
   :class:`~crdtstream.gossip.messages.Progress` record) a watermark at or past ``end``: from
   then on it accepts no write to the window, so its own write count there is frozen. A member
   that is down (crashed, paused, partitioned) therefore holds finality back until it comes
   back, restarts or is removed: a dead verdict is a guess, and a paused member that wakes up
   still holds the writes it accepted before the pause.
2. **every replica that may hold writes to the window is accounted for** — the candidates are
   the reporters, every replica with writes to the window merged here, and every replica a
   reporter says it holds writes of (``Progress.held``). Each candidate is either
   a. *closed by itself*: its own record's watermark reached ``end``; its count there is exact;
      or
   b. *retired and sealed*: its process is known to be gone for good — its node restarted under
      another replica id, or left (a node that leaves never writes under that replica again),
      or was removed by an operator — and **every** reporter has sealed it, i.e. published in
      its own record (``Progress.sealed``) that it knows the replica retired, together with how
      many of its writes to the window it holds. No process writes under a retired replica, so
      its writes anywhere only move between nodes; the largest count any reporter holds after
      sealing is the most that can ever exist. (A crashed incarnation that had already closed
      the window is simply case a.)
3. **this node merged them all** — its per-window version vector
   (``lattice.window_versions(start)``) holds at least the exact count of every replica closed
   by itself and the largest sealed count of every retired one.

Why nothing can change afterwards: by 1 and 2a no running process can add a write to the
window; by 2b every write of a retired replica that still exists somewhere is covered; by 3
this node already has every one of them. Since every node converges to the same join, every
node that calls the window final reports the same value. Assumptions: a frame is not delivered
after its sender's node was seen restarted (frames are not held longer than a restart takes),
and a node removed by an operator never comes back under its old replica id.

Cost in finality delay: with every member up, none beyond the old rule (the last watermark to
pass ``end``, then one gossip round for counts). While a member is down, windows it had not
closed when it went down wait until it comes back, is restarted (then, for the windows its old
incarnation had open, one more round for every member's seal) or is removed. Windows that
ended before it went down, and that it closed, are not held back.

This is causal stability (Baquero, Almeida, Shoker, "Making operation-based CRDTs
operation-based", 2014) restricted to one window, with membership deciding who may still write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass

from crdtstream.gossip.messages import Progress

__all__ = ["ProgressTable", "window_is_final"]


def window_is_final(
    start_ms: int,
    end_ms: int,
    reporters: Iterable[str],
    progress: Mapping[str, Progress],
    merged_versions: Mapping[str, int],
    retired: Set[str] = frozenset(),
) -> bool:
    """Whether the window ``[start_ms, end_ms)`` is final (see the module docstring) given the
    reporters' replica ids, every replica's newest known record (``progress``), what this node
    merged (``merged_versions``) and the replicas known to be retired."""
    records = []
    for replica in reporters:
        record = progress.get(replica)
        if record is None or record.watermark_ms < end_ms:
            return False
        records.append(record)
    candidates = set(merged_versions)
    for record in records:
        candidates.add(record.replica)
        candidates.update(record.held.get(start_ms, ()))
    for replica in candidates:
        own = progress.get(replica)
        if own is not None and own.watermark_ms >= end_ms:
            needed = own.window_writes.get(start_ms, 0)
        elif replica in retired and all(replica in record.sealed for record in records):
            needed = max(record.held.get(start_ms, {}).get(replica, 0) for record in records)
        else:
            return False
        if merged_versions.get(replica, 0) < needed:
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
        if len(record.window_writes) <= self.keep_windows and len(record.held) <= self.keep_windows:
            return record
        newest = sorted(record.window_writes)[-self.keep_windows :]
        writes = {start: record.window_writes[start] for start in newest}
        held = record.held
        if len(held) > self.keep_windows:
            held = {start: held[start] for start in sorted(held)[-self.keep_windows :]}
        return Progress(record.replica, record.watermark_ms, writes, held, record.sealed)
