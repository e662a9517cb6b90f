"""The parser's memory of canonical keys across batches, so steady traffic pays per new key only.

Statsd traffic repeats the same keys batch after batch, yet almost every line of one batch can
carry a key of its own (tags make keys many). Building each key's text anew per batch costs a
string addition per line, and hands the store fresh string objects whose hashes must be computed
again. The catalogue keeps every canonical key once, numbered densely:

- canonical names and canonical tag lists get ids by dict lookups per *distinct* segment of a
  batch (a few hundred, not one per line);
- a key is the pair ``name id << 32 | tags id`` (tags id 0: no tags), found by a binary search in
  one sorted array of known pairs, so only never-seen pairs build a string;
- keys of lines the per-line parser handled are found by their text.

A key always keeps its id and its one string object, so the batches the parser returns hand the
store strings whose hashes are already cached. The catalogue is bounded: once it holds more than
``max_keys`` keys (or that many names or tag lists) it starts afresh, which only costs the next
batches their first-sight work again.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["DEFAULT_MAX_KEYS", "KeyCatalogue"]

Int64Array = npt.NDArray[np.int64]
DEFAULT_MAX_KEYS = 1 << 20
_PAIR_SHIFT = 32
_FIRST_CAPACITY = 1024


class KeyCatalogue:
    """Canonical keys seen so far, with dense ids (see the module docstring).

    Callers hold :attr:`lock` from the first id they ask for until they have read the names
    they need (:meth:`names`), so that a reset by another thread cannot mix two numberings.
    """

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 1 or max_keys >= 1 << (_PAIR_SHIFT - 1):
            raise ValueError(f"max_keys must be in [1, 2**31), got {max_keys}")
        self.lock = threading.Lock()
        self.max_keys = max_keys
        self._start_afresh()

    def _start_afresh(self) -> None:
        self._name_ids: dict[str, int] = {}
        self._name_texts: list[str] = []
        # Tags id 0 is "no tags"; tagged keys end with "#" and their canonical tag text.
        self._tag_ids: dict[str, int] = {}
        self._tag_suffixes: list[str] = [""]
        self._key_ids: dict[str, int] = {}
        self._names = np.empty(_FIRST_CAPACITY, dtype=object)
        self._pairs = np.zeros(0, dtype=np.int64)  # sorted
        self._pair_keys = np.zeros(0, dtype=np.int64)  # key id of each pair

    def __len__(self) -> int:
        return len(self._key_ids)

    def start_afresh_if_full(self) -> None:
        """Forget everything once a bound is passed (call before taking ids for a batch)."""
        limit = self.max_keys
        if len(self._key_ids) > limit or len(self._name_ids) > limit or len(self._tag_ids) > limit:
            self._start_afresh()

    def name_ids(self, texts: Sequence[str]) -> Int64Array:
        """The id of each canonical name (new ones added); one call per distinct name."""
        ids, texts_by_id = self._name_ids, self._name_texts
        for text in texts:
            if text not in ids:
                ids[text] = len(texts_by_id)
                texts_by_id.append(text)
        return np.fromiter(map(ids.__getitem__, texts), np.int64, len(texts))

    def tags_ids(self, texts: Sequence[str]) -> Int64Array:
        """The id (>= 1) of each canonical tag text (new ones added)."""
        ids, suffixes = self._tag_ids, self._tag_suffixes
        for text in texts:
            if text not in ids:
                ids[text] = len(suffixes)
                suffixes.append("#" + text)
        return np.fromiter(map(ids.__getitem__, texts), np.int64, len(texts))

    def pair_keys(self, name_ids: Int64Array, tags_ids: Int64Array) -> Int64Array:
        """The key id of each distinct ``(name id, tags id)`` pair (new keys added)."""
        pairs = (name_ids << _PAIR_SHIFT) | tags_ids
        known = self._pairs
        position = np.searchsorted(known, pairs)
        hit = position < known.shape[0]
        hit[hit] = known[position[hit]] == pairs[hit]
        keys = np.empty(pairs.shape[0], dtype=np.int64)
        keys[hit] = self._pair_keys[position[hit]]
        missing = np.flatnonzero(~hit)
        if missing.shape[0]:
            fresh = pairs[missing]
            names = np.array(self._name_texts, dtype=object)[fresh >> _PAIR_SHIFT]
            suffixes = np.array(self._tag_suffixes, dtype=object)
            texts = (names + suffixes[fresh & ((1 << _PAIR_SHIFT) - 1)]).tolist()
            fresh_keys = self.key_ids(texts)
            keys[missing] = fresh_keys
            order = np.argsort(fresh, kind="stable")
            at = np.searchsorted(known, fresh[order])
            self._pairs = np.insert(known, at, fresh[order])
            self._pair_keys = np.insert(self._pair_keys, at, fresh_keys[order])
        return keys

    def key_ids(self, texts: Sequence[str]) -> Int64Array:
        """The id of each canonical key text (new ones added)."""
        ids = self._key_ids
        before = len(ids)
        new = [text for text in dict.fromkeys(texts) if text not in ids]
        if new:
            ids.update(zip(new, range(before, before + len(new)), strict=True))
            self._store_names(new, before)
        return np.fromiter(map(ids.__getitem__, texts), np.int64, len(texts))

    def _store_names(self, texts: list[str], first: int) -> None:
        end = first + len(texts)
        if end > self._names.shape[0]:
            grown = np.empty(max(end, 2 * self._names.shape[0]), dtype=object)
            grown[:first] = self._names[:first]
            self._names = grown
        self._names[first:end] = texts

    def names(self) -> npt.NDArray[np.object_]:
        """Every key's text, indexed by key id (a view that later additions do not change)."""
        return self._names[: len(self._key_ids)]
