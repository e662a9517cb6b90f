"""The engine's counters, one typed field each (a misspelt name is a type error, not a new key)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EngineCounters", "IngestCounters"]


@dataclass(slots=True)
class EngineCounters:
    """Frames routed and events refused by the engine."""

    packets_received: int = 0
    packets_malformed: int = 0
    packets_unroutable: int = 0
    events_future_rejected: int = 0
    events_strong_refused: int = 0
    events_bounded_refused: int = 0
    events_reserved_refused: int = 0


@dataclass(slots=True)
class IngestCounters:
    """statsd lines and events, as ingested by this node."""

    lines_ok: int = 0
    lines_rejected: int = 0
    events_accepted: int = 0
    events_late: int = 0
    events_kind_conflict: int = 0
