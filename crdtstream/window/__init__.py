"""Windowed keyed stores: windows, watermarks, columnar per-kind state and gossip deltas."""

from __future__ import annotations

from crdtstream.window.delta import StoreDelta
from crdtstream.window.results import IngestResult, WindowRead, WindowValue
from crdtstream.window.store import WindowStore
from crdtstream.window.windows import Hopping, Tumbling, Windows

__all__ = [
    "Hopping",
    "IngestResult",
    "StoreDelta",
    "Tumbling",
    "WindowRead",
    "WindowStore",
    "WindowValue",
    "Windows",
]
