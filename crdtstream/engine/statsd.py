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


def without_keys(batch: KindBatch, refused: Callable[[str], bool]) -> tuple[KindBatch, int]:
    """``batch`` without the keys ``refused`` names (their rows and names), and how many rows
    were dropped."""
    kept_keys = ~np.fromiter(map(refused, batch.key_names), np.bool_, len(batch.key_names))
    if kept_keys.all():
        return batch, 0
    renumbered = np.cumsum(kept_keys, dtype=np.int64) - 1
    rows = kept_keys[batch.key_index]
    names = [name for name, kept in zip(batch.key_names, kept_keys.tolist(), strict=True) if kept]
    filtered, dropped = kept_rows(batch, rows)
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
