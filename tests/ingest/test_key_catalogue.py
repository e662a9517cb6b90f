"""The parser's key catalogue: stable ids and string objects across batches, one id per key text
however it was reached, and a bounded size that starts afresh without changing any result."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bench._statsd import statsd_workload
from crdtstream.ingest import StatsdParser, parse, parse_reference, statsd
from crdtstream.ingest._catalogue import KeyCatalogue

NOW_MS = 1_700_000_000_000


@pytest.mark.parametrize("table_cells_max", [0, 1 << 22])
def test_pairs_and_texts_share_one_id_per_key(table_cells_max: int) -> None:
    catalogue = KeyCatalogue(table_cells_max=table_cells_max)
    name_ids = catalogue.name_ids(["a.b", "c"])
    tags_ids = catalogue.tags_ids(["env:x", ""])
    keys = catalogue.row_keys(
        np.array([name_ids[0], name_ids[1], name_ids[0], name_ids[1]]),
        np.array([0, tags_ids[0], tags_ids[1], 0]),
    )
    names = catalogue.names()
    assert names[keys].tolist() == ["a.b", "c#env:x", "a.b#", "c"]
    # The per-line parser's keys arrive as text: they must find the same ids.
    assert catalogue.key_ids(["c#env:x", "new", "a.b"]).tolist() == [keys[1], 4, keys[0]]
    again = catalogue.row_keys(np.array([name_ids[1]]), np.array([tags_ids[0]]))
    assert again.tolist() == [keys[1]]
    assert catalogue.names()[again[0]] is names[keys[1]]


def test_a_full_catalogue_starts_afresh() -> None:
    catalogue = KeyCatalogue(max_keys=2)
    catalogue.key_ids(["a", "b", "c"])
    kept = catalogue.names()
    catalogue.start_afresh_if_full()
    assert len(catalogue) == 0
    assert catalogue.key_ids(["c"]).tolist() == [0]
    assert kept.tolist() == ["a", "b", "c"]  # a view handed out earlier is untouched
    with pytest.raises(ValueError, match="max_keys"):
        KeyCatalogue(max_keys=0)


def test_keys_are_the_same_objects_batch_after_batch() -> None:
    workload = statsd_workload(400, 5)
    first = parse(workload, NOW_MS).batches["counter"]
    second = parse(workload, NOW_MS).batches["counter"]
    by_name = {name: name for name in first.key_names}
    assert all(by_name[name] is name for name in second.key_names)


@pytest.mark.parametrize("table_cells_max", [300, 1 << 22])
def test_results_agree_with_the_oracle_across_catalogue_resets(
    monkeypatch: pytest.MonkeyPatch, table_cells_max: int
) -> None:
    # A small bound makes the catalogue start afresh every few batches; a small table bound
    # makes it give up the dense table for the sorted pairs on the way.
    catalogue = KeyCatalogue(max_keys=150, table_cells_max=table_cells_max)
    monkeypatch.setattr(statsd, "_IDLE_CATALOGUES", [catalogue])
    for seed in range(4):
        chooser = random.Random(seed)
        workload = statsd_workload(600, seed)
        for start in range(0, len(workload), 4):
            part = workload[start : start + chooser.randrange(1, 6)]
            assert parse(part, NOW_MS) == parse_reference(part, NOW_MS), f"seed={seed}"
    idle = statsd._IDLE_CATALOGUES
    # Lent out and given back every time.
    assert len(idle) == 1
    assert idle[0] is catalogue


def test_a_parse_while_the_catalogue_is_lent_out_uses_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(statsd, "_IDLE_CATALOGUES", [])  # as while another thread parses
    workload = statsd_workload(200, 9)
    first, second = parse(workload, NOW_MS), parse(workload, NOW_MS)
    assert first == second == parse_reference(workload, NOW_MS)
    assert first.batches["gauge"].key_space is not second.batches["gauge"].key_space
    assert not statsd._IDLE_CATALOGUES


def test_a_parser_of_ones_own_keeps_its_own_numbering_and_gives_the_same_rows() -> None:
    mine, theirs = StatsdParser(), StatsdParser(max_keys=50)
    for seed in range(3):
        workload = statsd_workload(400, seed)
        expected = parse_reference(workload, NOW_MS)
        mine_result, theirs_result = mine.parse(workload, NOW_MS), theirs.parse(workload, NOW_MS)
        assert mine_result == theirs_result == expected, f"seed={seed}"
        assert mine_result.batches["counter"].key_space is not None
        assert (
            mine_result.batches["counter"].key_space
            is not theirs_result.batches["counter"].key_space
        )
    # A second pass over known keys keeps every key's id.
    workload = statsd_workload(400, 0)
    again = mine.parse(workload, NOW_MS).batches["gauge"]
    once_more = mine.parse(workload, NOW_MS).batches["gauge"]
    assert again.key_space is once_more.key_space
    assert again.key_ids is not None
    assert once_more.key_ids is not None
    assert again.key_ids.tolist() == once_more.key_ids.tolist()
