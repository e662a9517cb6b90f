"""The DDSketch-style logarithmic mapping from values to bucket keys.

Shared by :class:`~crdtstream.crdt.distribution.Distribution` and the windowed store's
``distribution`` kind, so both put every value in the same bucket.

With ``gamma = (1 + a) / (1 - a)`` for relative accuracy ``a``, bucket ``k`` holds the positive
values in ``(gamma**(k-1), gamma**k]`` and :meth:`LogMapping.value` returns
``2 gamma**k / (gamma + 1)``, which is within relative error ``a`` of every value in the bucket.

The mapping is defined for **positive, finite** values only. Callers handle the rest:

- a negative value ``x`` goes to a separate negative store under ``key(-x)`` (by magnitude) and is
  read back as ``-value(key)``;
- zero goes to a zero count (no key);
- NaN and infinities are rejected as bad input.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["LogMapping"]


class LogMapping:
    """Values to integer bucket keys and back, with a relative-accuracy guarantee."""

    __slots__ = ("_log_gamma", "_log_scale", "gamma", "relative_accuracy")

    def __init__(self, relative_accuracy: float) -> None:
        if not (isinstance(relative_accuracy, float | int) and 0.0 < relative_accuracy < 1.0):
            raise ValueError(f"relative_accuracy must be in (0, 1), got {relative_accuracy!r}")
        self.relative_accuracy = float(relative_accuracy)
        self.gamma = (1.0 + self.relative_accuracy) / (1.0 - self.relative_accuracy)
        self._log_gamma = math.log(self.gamma)
        self._log_scale = math.log(2.0 / (self.gamma + 1.0))

    def keys(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """The bucket key of every positive finite value, vectorised."""
        return np.ceil(np.log(values) / self._log_gamma).astype(np.int64)

    def key(self, value: float) -> int:
        """The bucket key of one positive finite value.

        It runs the same numpy code as :meth:`keys`, so a value lands in the same bucket whether
        it is added alone or in a batch (``math.log`` may differ from numpy's by one ulp).
        """
        if not (value > 0.0 and math.isfinite(value)):
            raise ValueError(f"the mapping covers positive finite values, got {value!r}")
        return int(self.keys(np.array([value], dtype=np.float64))[0])

    def value(self, key: int) -> float:
        """The representative of bucket ``key``: within the relative accuracy of its values."""
        # One exp of the summed logarithms: gamma**key alone could overflow near the float max.
        return math.exp(key * self._log_gamma + self._log_scale)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LogMapping) and other.relative_accuracy == self.relative_accuracy

    def __hash__(self) -> int:
        return hash(self.relative_accuracy)

    def __repr__(self) -> str:
        return f"LogMapping(relative_accuracy={self.relative_accuracy})"
