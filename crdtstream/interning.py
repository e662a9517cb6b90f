"""Dense numbering of strings in bulk: ids for a whole batch of names in one C-level pass.

Stores and catalogues number their keys densely (0, 1, 2, ...) and meet new keys a batch at a
time. :func:`number_names` proposes the next free ids for every name of a batch and lets one
``map(dict.setdefault, ...)`` pass insert the absent names and read the present ones, so there
is no Python statement per name; only a batch that mixes known and new names pays a second,
smaller pass to close the gaps its known names left in the proposal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["number_names"]

Int64Array = npt.NDArray[np.int64]


def number_names(
    codes: dict[str, int], names: Sequence[str], first: int, *, shift: int = 0, tag: int = 0
) -> tuple[Int64Array, list[str]]:
    """The code of every name in ``codes``, adding the absent ones.

    New names get the ids ``first, first + 1, ...`` in order of first appearance, stored as the
    code ``id << shift | tag`` (``tag < 2**shift``); every code already in ``codes`` must have
    an id below ``first``. Returns each name's code and the new names, in id order.
    """
    count = len(names)
    if count == 0:
        return np.zeros(0, dtype=np.int64), []
    proposed = (np.arange(first, first + count, dtype=np.int64) << shift) | tag
    got = np.fromiter(map(codes.setdefault, names, proposed.tolist()), np.int64, count)
    fresh = np.flatnonzero(got == proposed)
    if fresh.shape[0] == count:
        return got, list(names)
    new = [names[row] for row in fresh.tolist()]
    if new and int(fresh[-1]) != len(new) - 1:
        # Known names came before some new ones, which were proposed ids past a gap: close it.
        ids = np.arange(first, first + len(new), dtype=np.int64)
        codes.update(zip(new, ((ids << shift) | tag).tolist(), strict=True))
        got = np.fromiter(map(codes.__getitem__, names), np.int64, count)
    return got, new
