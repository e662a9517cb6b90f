"""Vectorised parsing of plain decimal numbers (``[+-]digits[.digits]``) held in a byte buffer.

Only the common form is handled here, and only where the answer is provably identical to
Python's ``float(text)``: at most :data:`MAX_DIGITS` digits, so the digits form an integer
mantissa ``m < 2**53`` and ``m / 10**k`` (with ``k <= 15``, an exact power) is a single correctly
rounded division, the same value ``float`` computes (Clinger's fast path). Anything else
(exponents, long mantissas, stray bytes) is reported as not simple, for the caller to parse
exactly, one at a time.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_DIGITS", "Decimals", "gather", "parse_decimals"]

MAX_DIGITS: Final = 15
_MAX_WIDTH: Final = MAX_DIGITS + 2  # sign, digits and one dot
_DIGIT_0, _DIGIT_9, _DOT, _PLUS, _MINUS = 48, 57, 46, 43, 45


class Decimals(NamedTuple):
    """Parsed numbers: ``value`` is meaningful where ``simple``; ``signed`` marks a leading sign."""

    value: npt.NDArray[np.float64]
    simple: npt.NDArray[np.bool_]
    signed: npt.NDArray[np.bool_]


def gather(
    buffer: npt.NDArray[np.uint8], starts: npt.NDArray[np.int64], width: int
) -> npt.NDArray[np.uint8]:
    """A (len(starts), width) matrix of the bytes from each start on (clipped to the buffer)."""
    index = starts[:, None] + np.arange(width, dtype=np.int64)
    np.clip(index, 0, buffer.shape[0] - 1, out=index)
    gathered: npt.NDArray[np.uint8] = buffer[index]
    return gathered


def parse_decimals(
    buffer: npt.NDArray[np.uint8],
    starts: npt.NDArray[np.int64],
    ends: npt.NDArray[np.int64],
    *,
    allow_sign: bool = True,
    allow_dot: bool = True,
) -> Decimals:
    """Parse the numbers in ``buffer[starts[i]:ends[i]]``, each as ``float`` would."""
    count = starts.shape[0]
    if count == 0:
        return Decimals(np.zeros(0), np.zeros(0, np.bool_), np.zeros(0, np.bool_))
    lengths = ends - starts
    width = int(min(max(int(lengths.max()), 1), _MAX_WIDTH))
    # Right-aligned: column j holds the byte (width - 1 - j) places before each end, so a
    # digit's power of ten depends only on its column and on whether the dot is to its right.
    chars = gather(buffer, ends - width, width)
    columns = np.arange(width)
    first = buffer[np.minimum(starts, buffer.shape[0] - 1)]
    signed = ((first == _PLUS) | (first == _MINUS)) & (lengths > 0) & allow_sign
    # The text of row i fills its last lengths[i] columns; a sign, if any, is the first of them.
    body = columns >= (width - lengths + signed)[:, None]
    is_digit = body & ((chars - np.uint8(_DIGIT_0)) <= np.uint8(9))
    is_dot = body & (chars == _DOT)
    # Row counts as small matrix products: much faster than count_nonzero along an axis.
    ones = np.ones(width, dtype=np.uint8)
    digit_count = is_digit.view(np.uint8) @ ones
    dot_count = is_dot.view(np.uint8) @ ones
    other_count = (body & ~(is_digit | is_dot)).view(np.uint8) @ ones
    simple = (
        (lengths <= width)
        & (digit_count >= 1)
        & (digit_count <= MAX_DIGITS)
        & (dot_count <= (1 if allow_dot else 0))
        & (other_count == 0)
    )
    dot_column = np.where(dot_count > 0, np.argmax(is_dot, axis=1), -1)
    digits = np.where(is_digit, chars - np.float64(_DIGIT_0), 0.0)
    left_of_dot = columns < dot_column[:, None]
    # Sums of exact integers below 2**53 are exact in any order, so a matrix product is exact.
    powers = 10.0 ** (width - 1 - columns)
    mantissa = np.where(left_of_dot, 0.0, digits) @ powers
    mantissa += np.where(left_of_dot, digits, 0.0) @ (powers / 10.0)
    fraction_digits = np.where(dot_column >= 0, width - 1 - dot_column, 0)
    value = mantissa / _POWERS_OF_TEN[np.minimum(fraction_digits, MAX_DIGITS)]
    np.negative(value, out=value, where=signed & (first == _MINUS))
    return Decimals(value, simple, signed)


_POWERS_OF_TEN: Final = 10.0 ** np.arange(MAX_DIGITS + 1)
