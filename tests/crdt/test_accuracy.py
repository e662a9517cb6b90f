"""Accuracy of the sketches against exact answers (seeded, so every run checks the same data)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from crdtstream.crdt import Distribution, HyperLogLog

SEED = 20_240_601


def standard_error(precision: int) -> float:
    return 1.04 / math.sqrt(2**precision)


@pytest.mark.parametrize("cardinality", [10, 1_000, 20_000, 100_000, 1_000_000])
def test_hyperloglog_estimate_within_three_standard_errors(cardinality: int) -> None:
    rng = np.random.default_rng(SEED + cardinality)
    items = rng.choice(2**62, size=cardinality, replace=False)
    sketch = HyperLogLog("a", precision=14)
    # Split over two replicas and add duplicates: neither may change the estimate.
    other = HyperLogLog("b", precision=14)
    sketch.add_many(items[: cardinality // 2])
    other.add_many(items[cardinality // 3 :])
    sketch.merge(other)
    error = sketch.value / cardinality - 1
    bound = 3 * standard_error(14)
    assert abs(error) <= bound, f"seed={SEED + cardinality} n={cardinality} error={error:.4f}"


def test_hyperloglog_is_unbiased_with_the_expected_spread() -> None:
    """Over many independent sketches the mean error is ~0 and the spread ~1.04/sqrt(m)."""
    precision, cardinality, sketches = 10, 20_000, 40
    rng = np.random.default_rng(SEED)
    errors = []
    for _ in range(sketches):
        sketch = HyperLogLog("a", precision)
        sketch.add_many([f"user-{n}" for n in rng.choice(2**40, cardinality, replace=False)])
        errors.append(sketch.value / cardinality - 1)
    mean, spread = float(np.mean(errors)), float(np.std(errors))
    expected = standard_error(precision)
    assert abs(mean) <= 3 * expected / math.sqrt(sketches), f"seed={SEED} mean={mean:.4f}"
    assert 0.6 * expected <= spread <= 1.5 * expected, f"seed={SEED} spread={spread:.4f}"


def test_hyperloglog_small_cardinalities_are_nearly_exact() -> None:
    sketch = HyperLogLog("a", precision=14)
    for n in range(1, 201):
        sketch.add(f"item-{n}")
        assert abs(sketch.value - n) <= max(1, n // 100), f"n={n} estimate={sketch.value}"


def assert_quantiles_accurate(
    values: np.ndarray, sketch: Distribution, accuracy: float, label: str
) -> None:
    for q in np.linspace(0, 1, 41):
        exact = float(np.quantile(values, q, method="lower"))
        estimate = sketch.quantile(float(q))
        assert estimate is not None
        if exact == 0:
            assert estimate == 0, f"{label} q={q}: {estimate} for an exact 0"
            continue
        error = abs(estimate - exact) / abs(exact)
        assert error <= accuracy * (1 + 1e-9), f"{label} q={q}: {estimate} vs {exact}"


@pytest.mark.parametrize("accuracy", [0.01, 0.05])
@pytest.mark.parametrize("shape", ["lognormal", "normal", "signed", "with_zeros"])
def test_distribution_quantiles_within_relative_accuracy(shape: str, accuracy: float) -> None:
    rng = np.random.default_rng(SEED)
    draws: dict[str, Callable[[], npt.NDArray[np.float64]]] = {
        "lognormal": lambda: rng.lognormal(0.0, 3.0, 20_000),
        "normal": lambda: rng.normal(1_000.0, 50.0, 20_000),
        "signed": lambda: rng.normal(0.0, 10.0, 20_000),
        "with_zeros": lambda: np.where(rng.random(20_000) < 0.3, 0.0, rng.exponential(5, 20_000)),
    }
    values = draws[shape]()
    # Four replicas, each taking a quarter, some one at a time and some in batches.
    replicas = [Distribution(f"r{i}", accuracy) for i in range(4)]
    for index, chunk in enumerate(np.array_split(values, 4)):
        replicas[index].add_many(chunk[100:])
        for value in chunk[:100]:
            replicas[index].add(float(value))
    merged = replicas[0]
    for other in replicas[1:]:
        merged.merge(other)
    label = f"seed={SEED} shape={shape}"
    assert_quantiles_accurate(values, merged, accuracy, label)
    assert merged.count == len(values)
    assert merged.min == values.min()
    assert merged.max == values.max()
    assert math.isclose(merged.sum, float(values.sum()), rel_tol=1e-9, abs_tol=1e-6)


def test_distribution_repeated_counts_match_repeated_values() -> None:
    counted, repeated = Distribution("a"), Distribution("a")
    counted.add(2.5, count=7)
    repeated.add_many([2.5] * 7)
    assert counted == repeated
    assert counted.count == 7
    assert counted.sum == 17.5
