"""Bulk dense numbering of names against a one-name-at-a-time model."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crdtstream.interning import number_names
from crdtstream.window.keys import KeyRegistry

names = st.sampled_from([f"k{index}" for index in range(12)])
batches = st.lists(st.lists(names, max_size=10), max_size=8)


@given(batches, st.integers(0, 3), st.integers(0, 2))
def test_number_names_matches_numbering_one_by_one(
    batch_list: list[list[str]], shift: int, tag_seed: int
) -> None:
    tag = tag_seed % (1 << shift) if shift else 0
    codes: dict[str, int] = {}
    model: dict[str, int] = {}
    order: list[str] = []
    for batch in batch_list:
        got, new = number_names(codes, batch, len(order), shift=shift, tag=tag)
        expected_new = []
        for name in batch:
            if name not in model:
                model[name] = len(model)
                expected_new.append(name)
        order.extend(new)
        assert new == expected_new, batch_list
        assert got.tolist() == [(model[name] << shift) | tag for name in batch], batch_list
        assert codes == {name: (number << shift) | tag for name, number in model.items()}


kinds = st.sampled_from(["counter", "gauge", "set"])


@given(st.lists(st.tuples(kinds, st.lists(names, max_size=10)), max_size=8))
def test_registry_gives_dense_ids_per_kind_and_rejects_other_kinds(
    calls: list[tuple[str, list[str]]],
) -> None:
    registry = KeyRegistry()
    kind_of: dict[str, str] = {}
    for kind, batch in calls:
        ids, conflicts = registry.ids(kind, batch)
        for name in batch:
            kind_of.setdefault(name, kind)
        expected_conflicts = list(dict.fromkeys(n for n in batch if kind_of[n] != kind))
        assert conflicts == expected_conflicts, calls
        for name, local in zip(batch, ids.tolist(), strict=True):
            if kind_of[name] == kind:
                assert registry.names[kind][local] == name, calls
                assert registry.kind_of(name) == (kind, local), calls
            else:
                assert local == -1, calls
    for kind, keys in registry.names.items():
        assert sorted(keys) == sorted(n for n, k in kind_of.items() if k == kind), calls
    assert len(registry) == len(kind_of)
