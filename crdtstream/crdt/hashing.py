"""The 64-bit item hash shared by :class:`HyperLogLog` and the windowed store's ``distinct`` kind.

Both must agree bit for bit, so this module is the single definition. Two entry points give the
same answer: :func:`hash64` (pure Python, fast for one item) and :func:`hash64_many`
(numpy-vectorised, for batches).

Definition. ``fmix`` is the splitmix64 finaliser (a bijection of 64-bit words).

- ``int``: ``fmix((x mod 2**64) + GOLDEN_GAMMA)``. Negative numbers therefore hash as their
  two's-complement 64-bit pattern, and integers outside 64 bits are reduced modulo ``2**64``.
- ``bytes``: trailing NUL bytes are **not significant** (``b"a"`` and ``b"a\\x00"`` hash the same),
  because numpy's fixed-width ``S`` arrays cannot represent them. Of the stripped bytes, of length
  ``n``: ``h = fmix(BYTES_SEED ^ n)``, then for every little-endian 8-byte word ``w`` (the last
  word zero-padded) ``h = fmix(h ^ w)``.
- ``str``: its UTF-8 bytes (so ``"a"`` and ``b"a"`` hash the same).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["HashableItem", "bit_length_many", "hash64", "hash64_many"]

HashableItem = str | bytes | int
"""What :func:`hash64` accepts."""

_MASK64 = (1 << 64) - 1
_GOLDEN_GAMMA = 0x9E3779B97F4A7C15
_BYTES_SEED = 0x5851F42D4C957F2D
_MIX_1 = 0xBF58476D1CE4E5B9
_MIX_2 = 0x94D049BB133111EB

# Very wide byte strings would make the fixed-width array huge (every row as wide as the widest
# item), so batches with such items are hashed item by item instead.
_MAX_VECTOR_WIDTH_BYTES = 256


def _fmix(z: int) -> int:
    z = ((z ^ (z >> 30)) * _MIX_1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX_2) & _MASK64
    return z ^ (z >> 31)


def _hash_bytes(data: bytes) -> int:
    stripped = data.rstrip(b"\x00")
    length = len(stripped)
    h = _fmix(_BYTES_SEED ^ length)
    padded = stripped + b"\x00" * (-length % 8)
    for start in range(0, len(padded), 8):
        h = _fmix(h ^ int.from_bytes(padded[start : start + 8], "little"))
    return h


def hash64(item: HashableItem) -> int:
    """The 64-bit hash of one ``str``, ``bytes`` or ``int`` (see the module docstring)."""
    if isinstance(item, bytes):
        return _hash_bytes(item)
    if isinstance(item, str):
        return _hash_bytes(item.encode("utf-8"))
    if isinstance(item, (int, np.integer)):
        return _fmix(((int(item) & _MASK64) + _GOLDEN_GAMMA) & _MASK64)
    raise TypeError(f"cannot hash {type(item).__name__}; expected str, bytes or int")


def _fmix_array(z: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    # Arrays (never numpy scalars) so that the intended modulo-2**64 wrap-around raises no warning.
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX_1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX_2)
    return z ^ (z >> np.uint64(31))


def _hash_int_array(values: npt.NDArray[Any]) -> npt.NDArray[np.uint64]:
    if values.dtype.kind == "u":
        words = values.astype(np.uint64)
    else:
        words = values.astype(np.int64).view(np.uint64)
    return _fmix_array(words + np.uint64(_GOLDEN_GAMMA))


def bit_length_many(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    """``int.bit_length`` of every element of a uint64 array, exactly (0 for 0)."""
    # Each 32-bit half is exact in float64, so frexp's exponent is the exact bit length.
    high = (values >> np.uint64(32)).astype(np.float64)
    low = (values & np.uint64(0xFFFFFFFF)).astype(np.float64)
    high_bits = np.frexp(high)[1].astype(np.int64)
    low_bits = np.frexp(low)[1].astype(np.int64)
    return np.where(high_bits > 0, high_bits + 32, low_bits)


def _hash_byte_rows(raw: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    """Hash each row of a (count, width) byte matrix; trailing zero bytes are not significant."""
    count, width = raw.shape
    word_count = max(1, -(-width // 8))
    if width != word_count * 8:
        padded = np.zeros((count, word_count * 8), dtype=np.uint8)
        padded[:, :width] = raw
        raw = padded
    words = np.ascontiguousarray(raw).view("<u8").reshape(count, word_count)
    nonzero_words = words != 0
    last_word = word_count - 1 - np.argmax(nonzero_words[:, ::-1], axis=1)
    last_values = words[np.arange(count), last_word]
    last_bytes = (bit_length_many(last_values) + 7) // 8
    lengths = np.where(nonzero_words.any(axis=1), 8 * last_word + last_bytes, 0)
    lengths = lengths.astype(np.uint64)
    used_words = (lengths + np.uint64(7)) // np.uint64(8)
    h = _fmix_array(lengths ^ np.uint64(_BYTES_SEED))
    for column in range(word_count):
        mixed = _fmix_array(h ^ words[:, column])
        h = np.where(used_words > column, mixed, h)
    return h


def _byte_rows(
    array: npt.NDArray[Any], items: Sequence[Any] | npt.NDArray[Any]
) -> npt.NDArray[np.uint8] | None:
    """The items' UTF-8 bytes as a (count, width) matrix, or None when not vectorisable."""
    count = len(array)
    if array.dtype.kind == "U":
        codes = array.view(np.uint32).reshape(count, array.dtype.itemsize // 4)
        if codes.size and int(codes.max()) >= 0x80:
            # Non-ASCII text: UTF-8 encode in Python, then continue as bytes.
            array = np.asarray([str(item).encode("utf-8") for item in items], dtype=np.bytes_)
        else:
            return codes.astype(np.uint8)
    if array.dtype.kind != "S" or array.dtype.itemsize > _MAX_VECTOR_WIDTH_BYTES:
        return None
    return array.view(np.uint8).reshape(count, array.dtype.itemsize)


def _hash_array(
    array: npt.NDArray[Any], items: Sequence[Any] | npt.NDArray[Any]
) -> npt.NDArray[np.uint64]:
    if array.ndim != 1:
        raise ValueError(f"expected a one-dimensional array, got shape {array.shape}")
    if array.dtype.kind in "iub":
        return _hash_int_array(array)
    if array.dtype.kind in "SU" and array.dtype.itemsize <= 4 * _MAX_VECTOR_WIDTH_BYTES:
        rows = _byte_rows(array, items)
        if rows is not None:
            return _hash_byte_rows(rows)
    return _hash_each(items)


def hash64_many(items: npt.NDArray[Any] | Sequence[HashableItem]) -> npt.NDArray[np.uint64]:
    """The :func:`hash64` of every item, vectorised: a uint64 array of the same length.

    ``items`` is a one-dimensional numpy integer, bool, ``S`` or ``U`` array, or a sequence of
    ``str``/``bytes``/``int``. A sequence mixing those types, or one with very wide items, is
    hashed item by item (same answer, slower).
    """
    if isinstance(items, np.ndarray):
        return _hash_array(items, items)
    if len(items) == 0:
        return np.zeros(0, dtype=np.uint64)
    # numpy would silently turn a mix of str and int into strings, so only uniform sequences
    # take the vectorised path.
    kinds = set(map(type, items))
    if kinds <= {int}:
        return _hash_array(np.asarray(items), items)
    # Check the width first: one very long item would make every row of the array that wide.
    textual = kinds <= {str} or kinds <= {bytes}
    if textual and max(map(len, items)) <= _MAX_VECTOR_WIDTH_BYTES:  # type: ignore[arg-type]
        return _hash_array(np.asarray(items), items)
    return _hash_each(items)


def _hash_each(items: Iterable[Any]) -> npt.NDArray[np.uint64]:
    hashes = [hash64(item if not isinstance(item, np.generic) else item.item()) for item in items]
    return np.asarray(hashes, dtype=np.uint64)
