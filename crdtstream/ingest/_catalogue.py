"""The parser's memory of canonical keys across batches, so steady traffic pays per new key only.

Statsd traffic repeats the same keys batch after batch, yet almost every line of one batch can
carry a key of its own (tags make keys many). Building each key's text anew per batch costs a
string addition per line, and hands the store fresh string objects whose hashes must be computed
again. The catalogue keeps every canonical key once, numbered densely:

- raw names and raw tag lists (as sent) get ids by dict lookups per *distinct* segment of a
  batch (a few hundred, not one per line); only a raw segment never seen is canonicalised, and
  canonical names and tag lists are numbered once each;
- a key is the pair (name id, tags id) (tags id 0: no tags), found per line in a dense table
  of key ids while names x tag lists stay few, else by a binary search in the sorted array of
  known pairs ``name id << 32 | tags id``; only never-seen pairs build a string;
- keys of lines the per-line parser handled are found by their text.

A key always keeps its id and its one string object, so the batches the parser returns hand the
store strings whose hashes are already cached. The catalogue is bounded: once it holds more than
``max_keys`` keys (or that many names or tag lists) it starts afresh, which only costs the next
batches their first-sight work again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from crdtstream.interning import number_names

__all__ = ["DEFAULT_MAX_KEYS", "KeyCatalogue"]

Int64Array = npt.NDArray[np.int64]
DEFAULT_MAX_KEYS = 1 << 20
_PAIR_SHIFT = 32
_FIRST_CAPACITY = 1024


class KeyCatalogue:
    """Canonical keys seen so far, with dense ids (see the module docstring).

    Not for concurrent use: one caller at a time, from the first id it asks for until it has
    read the names it needs (:meth:`names`).
    """

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS, table_cells_max: int = 1 << 22) -> None:
        if max_keys < 1 or max_keys >= 1 << (_PAIR_SHIFT - 1):
            raise ValueError(f"max_keys must be in [1, 2**31), got {max_keys}")
        self.max_keys = max_keys
        self.table_cells_max = table_cells_max  # int64 key ids: 32 MiB by default
        self._start_afresh()

    def _start_afresh(self) -> None:
        # Ids are only meaningful within one numbering; a consumer that remembers ids (the
        # store) tells numberings apart by this token.
        self.generation = object()
        self._name_ids: dict[str, int] = {}
        self._name_texts: list[str] = []
        # Tags id 0 is "no tags"; tagged keys end with "#" and their canonical tag text.
        self._tag_ids: dict[str, int] = {}
        self._tag_suffixes: list[str] = [""]
        self._key_ids: dict[str, int] = {}
        # What each raw name or tag list (as sent) came to: its name or tags id, or a negative
        # code saying why it was rejected; see :meth:`segment_codes`.
        self.raw_names: dict[bytes, int] = {}
        self.raw_tags: dict[bytes, int] = {}
        self._names = np.empty(_FIRST_CAPACITY, dtype=object)
        # Key id by (name id, tags id): a dense table while names x tag lists stay few, else
        # the known pairs sorted, with their key ids.
        self._table: Int64Array | None = np.full((0, 0), -1, dtype=np.int64)
        self._pairs = np.zeros(0, dtype=np.int64)
        self._pair_keys = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._key_ids)

    def start_afresh_if_full(self) -> None:
        """Forget everything once a bound is passed (call before taking ids for a batch)."""
        limit = self.max_keys
        sizes = (self._key_ids, self._name_ids, self._tag_ids, self.raw_names, self.raw_tags)
        if any(len(table) > limit for table in sizes):
            self._start_afresh()

    def name_ids(self, texts: Sequence[str]) -> Int64Array:
        """The id of each canonical name (new ones added)."""
        ids, new = number_names(self._name_ids, texts, len(self._name_texts))
        self._name_texts.extend(new)
        return ids

    def tags_ids(self, texts: Sequence[str]) -> Int64Array:
        """The id (>= 1) of each canonical tag text (new ones added)."""
        ids, new = number_names(self._tag_ids, texts, len(self._tag_suffixes))
        self._tag_suffixes.extend(["#" + text for text in new])
        return ids

    def row_keys(self, name_ids: Int64Array, tags_ids: Int64Array) -> Int64Array:
        """The key id of each row's ``(name id, tags id)`` pair (new keys added)."""
        keys = self._known_keys(name_ids, tags_ids)
        missing = np.flatnonzero(keys < 0)
        if missing.shape[0]:
            pairs = (name_ids[missing] << _PAIR_SHIFT) | tags_ids[missing]
            fresh, inverse = np.unique(pairs, return_inverse=True)
            keys[missing] = self._add_pairs(fresh)[inverse.reshape(-1)]
        return keys

    def _known_keys(self, name_ids: Int64Array, tags_ids: Int64Array) -> Int64Array:
        """Key id of each known pair, -1 for the others."""
        if self._table is not None:
            rows, columns = self._table.shape
            if len(self._name_texts) > rows or len(self._tag_suffixes) > columns:
                self._grow_table()
        if self._table is not None:
            keys: Int64Array = self._table[name_ids, tags_ids]
            return keys
        pairs = (name_ids << _PAIR_SHIFT) | tags_ids
        known = self._pairs
        position = np.searchsorted(known, pairs)
        np.minimum(position, max(known.shape[0] - 1, 0), out=position)
        keys = np.full(pairs.shape[0], -1, dtype=np.int64)
        if known.shape[0]:
            hit = known[position] == pairs
            keys[hit] = self._pair_keys[position[hit]]
        return keys

    def _grow_table(self) -> None:
        """Make the pair table hold every name and tag list (doubling), or give it up for the
        sorted pairs once it would pass ``table_cells_max`` cells."""
        assert self._table is not None
        rows, columns = self._table.shape
        new_rows = max(len(self._name_texts), 2 * rows, 16)
        new_columns = max(len(self._tag_suffixes), 2 * columns, 16)
        if new_rows * new_columns > self.table_cells_max:
            name_ids, tags_ids = np.nonzero(self._table >= 0)
            self._pairs = (name_ids.astype(np.int64) << _PAIR_SHIFT) | tags_ids
            self._pair_keys = self._table[name_ids, tags_ids]
            self._table = None
            return
        grown = np.full((new_rows, new_columns), -1, dtype=np.int64)
        grown[:rows, :columns] = self._table
        self._table = grown

    def _add_pairs(self, pairs: Int64Array) -> Int64Array:
        """Key ids of new, distinct, sorted pairs: their texts built and numbered."""
        names = np.array(self._name_texts, dtype=object)[pairs >> _PAIR_SHIFT]
        suffixes = np.array(self._tag_suffixes, dtype=object)
        tags_ids = pairs & ((1 << _PAIR_SHIFT) - 1)
        keys = self.key_ids((names + suffixes[tags_ids]).tolist())
        if self._table is not None:
            self._table[pairs >> _PAIR_SHIFT, tags_ids] = keys
        else:
            at = np.searchsorted(self._pairs, pairs)
            self._pairs = np.insert(self._pairs, at, pairs)
            self._pair_keys = np.insert(self._pair_keys, at, keys)
        return keys

    def key_ids(self, texts: Sequence[str]) -> Int64Array:
        """The id of each canonical key text (new ones added)."""
        first = len(self._key_ids)
        ids, new = number_names(self._key_ids, texts, first)
        if new:
            self._store_names(new, first)
        return ids

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
