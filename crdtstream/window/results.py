"""What the store returns: ingest results and window reads."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["IngestResult", "WindowRead", "WindowValue"]


@dataclass(frozen=True, slots=True)
class IngestResult:
    """The fate of every event of one ingest call; the counts add up to the batch size.

    ``rejected`` events named a key that already has another kind (``rejected_keys``);
    ``invalid`` events had a non-finite value or weight, a non-positive weight, or a timestamp
    outside the supported range; ``late`` events targeted a closed or evicted slice.
    ``evicted_windows_ms`` are the starts of slices (windows, when tumbling) dropped by retention.
    """

    accepted: int = 0
    late: int = 0
    late_by_key: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    rejected_keys: tuple[str, ...] = ()
    invalid: int = 0
    evicted_windows_ms: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class WindowValue:
    """One key's value in one window ``[start_ms, end_ms)``; ``final`` is the caller's verdict."""

    start_ms: int
    end_ms: int
    value: object
    final: bool


@dataclass(frozen=True, slots=True)
class WindowRead:
    """Every key's value in one window."""

    start_ms: int
    end_ms: int
    final: bool
    values: dict[str, object]
