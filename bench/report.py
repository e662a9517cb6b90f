"""The one result shape every benchmark suite prints.

``--json`` prints ``{"suite", "results": [{"name", "value", "unit"}], "ratios": [{"name",
"value", "goal", "met"}]}``; the default is a human table. A ratio's goal is a string such as
``">= 20"`` or ``"<= 0.05"`` so that the direction is explicit. A suite may add
``"parameters"`` and ``"environment"`` objects (what was run, on what), and name some ratios
*promises*: the command exits non-zero when one of those is not met.
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
    parameters: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    promises: set[str] = field(default_factory=set)

    def add(self, name: str, value: float, unit: str) -> None:
        """Record a result."""
        self.results.append(Result(name, float(value), unit))

    def ratio(self, name: str, value: float, goal: str) -> None:
        """Record a ratio against a baseline measured in the same run."""
        self.ratios.append(Ratio(name, float(value), goal))

    def promise(self, name: str, value: float, goal: str) -> None:
        """Record a ratio that is a promise: when it is not met the command fails."""
        self.ratio(name, value, goal)
        self.promises.add(name)

    def broken_promises(self) -> list[str]:
        """The names of the promises not met (empty: every promise kept)."""
        return [r.name for r in self.ratios if r.name in self.promises and not r.met]

    def to_json(self) -> dict[str, Any]:
        """The JSON object that ``--json`` prints."""
        shape: dict[str, Any] = {
            "suite": self.suite,
            "results": [{"name": r.name, "value": r.value, "unit": r.unit} for r in self.results],
            "ratios": [
                {"name": r.name, "value": r.value, "goal": r.goal, "met": r.met}
                for r in self.ratios
            ],
        }
        if self.parameters:
            shape["parameters"] = self.parameters
        if self.environment:
            shape["environment"] = self.environment
        if self.promises:
            shape["broken_promises"] = self.broken_promises()
        return shape

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
                if q.name in self.promises:
                    mark += " (promise)"
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
