"""statsd batches filtered before they reach the store: rows stamped too far in the future, and
the keys whose mode statsd cannot serve (numpy masks, no per-event loop)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from crdtstream.ingest.batch import KindBatch

__all__ = ["kept_rows", "without_future_rows", "without_keys"]


def without_future_rows(batch: KindBatch, horizon_ms: int) -> tuple[KindBatch, int]:
    """``batch`` without rows stamped after ``horizon_ms``, and how many were dropped."""
    return kept_rows(batch, batch.timestamps_ms <= horizon_ms)


def without_keys(
    batch: KindBatch, refusal: Callable[[str], int], reasons: int
) -> tuple[KindBatch, npt.NDArray[np.int64]]:
    """``batch`` without the keys ``refusal`` refuses (their rows and names), and the rows
    dropped per reason: ``refusal(name)`` is 0 to keep the key, else its reason, below
    ``reasons``. One pass over the batch's distinct names, whatever the reasons."""
    codes = np.fromiter(map(refusal, batch.key_names), np.int64, len(batch.key_names))
    kept_keys = codes == 0
    if kept_keys.all():
        return batch, np.zeros(reasons, dtype=np.int64)
    dropped = np.bincount(codes[batch.key_index], minlength=reasons)
    renumbered = np.cumsum(kept_keys, dtype=np.int64) - 1
    rows = kept_keys[batch.key_index]
    names = [name for name, kept in zip(batch.key_names, kept_keys.tolist(), strict=True) if kept]
    filtered, _ = kept_rows(batch, rows)
    return (
        dataclasses.replace(
            filtered,
            key_names=names,
            key_index=renumbered[filtered.key_index],
            key_ids=None if batch.key_ids is None else batch.key_ids[kept_keys],
        ),
        dropped,
    )


def kept_rows(batch: KindBatch, keep: npt.NDArray[np.bool_]) -> tuple[KindBatch, int]:
    dropped = len(keep) - int(np.count_nonzero(keep))
    if not dropped:
        return batch, 0
    filtered = dataclasses.replace(
        batch,
        key_index=batch.key_index[keep],
        values=batch.values[keep],
        timestamps_ms=batch.timestamps_ms[keep],
        weights=batch.weights[keep],
        relative=batch.relative[keep],
    )
    return filtered, dropped
