"""The store's keys: each key's kind and its dense id among the keys of that kind.

One dict maps a key to a code ``local_id << 3 | kind index``, so registering a batch of keys is
one :func:`~crdtstream.interning.number_names` pass (no Python statement per key) and a few
numpy operations on the codes; first sight of many keys (a fresh store, a new client's tags) is
the common case it is built for.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import filterfalse
from typing import Final

import numpy as np
import numpy.typing as npt

from crdtstream.interning import number_names
from crdtstream.window.cells import KINDS

__all__ = ["KeyRegistry"]

Int64Array = npt.NDArray[np.int64]
_KIND_BITS: Final = 3
_KIND_MASK: Final = (1 << _KIND_BITS) - 1
_KIND_INDEX: Final = {kind: index for index, kind in enumerate(KINDS)}
assert len(KINDS) <= 1 << _KIND_BITS


class KeyRegistry:
    """Keys by kind, with dense kind-local ids from 0 (see the module docstring)."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {}
        self.names: dict[str, list[str]] = {kind: [] for kind in KINDS}
        """Per kind, the key of each local id."""

    def __len__(self) -> int:
        return len(self._codes)

    def __contains__(self, key: object) -> bool:
        return key in self._codes

    def __iter__(self) -> Iterator[str]:
        return iter(self._codes)

    def unknown(self, names: Iterable[str]) -> list[str]:
        """The names that are not keys of the store (in order, repeats kept)."""
        return list(filterfalse(self._codes.__contains__, names))

    def kind_of(self, key: str) -> tuple[str, int] | None:
        """``(kind, local id)`` of ``key``, None when the store has never seen it."""
        code = self._codes.get(key)
        if code is None:
            return None
        return KINDS[code & _KIND_MASK], code >> _KIND_BITS

    def ids(self, kind: str, names: Sequence[str]) -> tuple[Int64Array, list[str]]:
        """The local id of each of ``names`` as a key of ``kind``, registering new keys; -1 for
        a key that has another kind. Also returns those conflicting keys, each once."""
        kind_index = _KIND_INDEX[kind]
        if len(names) == 1:
            # One event (an HTTP or library write) of a key seen before: one dict lookup, not
            # the batch numbering's array passes.
            code = self._codes.get(names[0])
            if code is not None and code & _KIND_MASK == kind_index:
                return np.array([code >> _KIND_BITS], dtype=np.int64), []
        local_names = self.names[kind]
        codes, new = number_names(
            self._codes, names, len(local_names), shift=_KIND_BITS, tag=kind_index
        )
        local_names.extend(new)
        same_kind = (codes & _KIND_MASK) == kind_index
        if same_kind.all():
            return codes >> _KIND_BITS, []
        other = np.flatnonzero(~same_kind)
        conflicts = list(dict.fromkeys(names[row] for row in other.tolist()))
        return np.where(same_kind, codes >> _KIND_BITS, -1), conflicts
