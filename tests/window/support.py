"""Shared helpers of the windowed-store tests: a canonical, comparable view of a store."""

from __future__ import annotations

from typing import Any

from crdtstream.config import WindowConfig
from crdtstream.window.kinds.distribution import DistributionValue
from crdtstream.window.store import WindowStore

CONFIG = WindowConfig(size_ms=1_000, allowed_lateness_ms=100_000, retention_windows=1_000)


def normal(value: object) -> Any:
    """A value that compares by content (distribution values hold arrays)."""
    if isinstance(value, DistributionValue):
        return (
            value.count,
            round(value.total, 6),
            value.minimum,
            value.maximum,
            value.zero_count,
            tuple(value.positive_keys.tolist()),
            tuple(value.positive_counts.tolist()),
            tuple(value.negative_keys.tolist()),
            tuple(value.negative_counts.tolist()),
        )
    if isinstance(value, float):
        return round(value, 6)
    return value


def canonical(store: WindowStore) -> dict[int, dict[str, Any]]:
    """Every retained window's values, normalised."""
    return {
        start: {k: normal(v) for k, v in store.read_window(start).values.items()}
        for start in store.window_starts()
    }
