"""The one result shape every benchmark suite prints.

``--json`` prints ``{"suite", "results": [{"name", "value", "unit"}], "ratios": [{"name",
"value", "goal", "met"}]}``; the default is a human table. A ratio's goal is a string such as
``">= 20"`` or ``"<= 0.05"`` so that the direction is explicit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Ratio", "Report", "Result", "best_of", "timed"]


@dataclass(frozen=True, slots=True)
class Result:
    """One measured figure."""

    name: str
    value: float
    unit: str


@dataclass(frozen=True, slots=True)
class Ratio:
    """A measured ratio against a baseline run side by side, with its goal (``">= 20"``)."""

    name: str
    value: float
    goal: str

    @property
    def met(self) -> bool:
        """Whether ``value`` satisfies ``goal``."""
        op, _, bound_text = self.goal.partition(" ")
        bound = float(bound_text)
        if op == ">=":
            return self.value >= bound
        if op == "<=":
            return self.value <= bound
        raise ValueError(f"goal must start with '>=' or '<=': {self.goal!r}")


@dataclass(slots=True)
class Report:
    """Results and ratios of one suite run."""

    suite: str
    results: list[Result] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)

    def add(self, name: str, value: float, unit: str) -> None:
        """Record a result."""
        self.results.append(Result(name, float(value), unit))

    def ratio(self, name: str, value: float, goal: str) -> None:
        """Record a ratio against a baseline measured in the same run."""
        self.ratios.append(Ratio(name, float(value), goal))

    def to_json(self) -> dict[str, Any]:
        """The JSON object that ``--json`` prints."""
        return {
            "suite": self.suite,
            "results": [{"name": r.name, "value": r.value, "unit": r.unit} for r in self.results],
            "ratios": [
                {"name": r.name, "value": r.value, "goal": r.goal, "met": r.met}
                for r in self.ratios
            ],
        }

    def to_table(self) -> str:
        """A plain-text table for people."""
        lines = [f"suite: {self.suite}", ""]
        width = max([len(r.name) for r in self.results] + [len(r.name) for r in self.ratios] + [4])
        for r in self.results:
            lines.append(f"  {r.name:<{width}}  {r.value:>16,.3f}  {r.unit}")
        if self.ratios:
            lines.append("")
            for q in self.ratios:
                mark = "met" if q.met else "NOT MET"
                lines.append(f"  {q.name:<{width}}  {q.value:>16,.3f}  goal {q.goal}  {mark}")
        return "\n".join(lines)

    def dumps(self) -> str:
        """``to_json`` as a string."""
        return json.dumps(self.to_json())


def timed(function: Callable[[], object]) -> float:
    """Seconds one call of ``function`` takes (perf_counter)."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def best_of(repeats: int, function: Callable[[], object]) -> float:
    """The fastest of ``repeats`` timed calls, in seconds: the least disturbed by the machine."""
    return min(timed(function) for _ in range(repeats))
