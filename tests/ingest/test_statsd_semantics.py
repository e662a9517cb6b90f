"""What each accepted statsd / DogStatsD form turns into, checked on both parsers."""

from __future__ import annotations

import numpy as np
import pytest

from crdtstream.crdt.hashing import hash64
from crdtstream.ingest import KindBatch, ParseResult, canonical_key, parse, parse_reference
from tests.ingest.parsers import PARSERS, Parser

NOW_MS = 1_700_000_000_123


def only_batch(result: ParseResult, kind: str) -> KindBatch:
    assert list(result.batches) == [kind]
    return result.batches[kind]  # type: ignore[index]


@pytest.mark.parametrize("parser", PARSERS)
def test_counter_is_scaled_by_the_inverse_sample_rate(parser: Parser) -> None:
    batch = only_batch(parser(b"hits:3|c|@0.5\nhits:-1|c\nhits:1:2|c|@0.25", NOW_MS), "counter")
    assert batch.rows() == [
        ("hits", 6.0, NOW_MS, 1.0, False),
        ("hits", -1.0, NOW_MS, 1.0, False),
        ("hits", 4.0, NOW_MS, 1.0, False),
        ("hits", 8.0, NOW_MS, 1.0, False),
    ]
    assert batch.key_names == ["hits"]


@pytest.mark.parametrize("parser", PARSERS)
def test_gauge_sets_and_signed_values_adjust(parser: Parser) -> None:
    batch = only_batch(parser(b"temp:20|g\ntemp:+3|g\ntemp:-4.5|g|@0.5", NOW_MS), "gauge")
    assert [(value, relative) for _, value, _, _, relative in batch.rows()] == [
        (20.0, False),
        (3.0, True),
        (-4.5, True),
    ]
    assert batch.weights.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("parser", PARSERS)
def test_set_members_become_hash64_of_their_bytes(parser: Parser) -> None:
    result = parser("users:alice|s\nusers:a:b|s\nusers:émile|s".encode(), NOW_MS)
    batch = only_batch(result, "distinct")
    assert batch.values.dtype == np.uint64
    assert batch.values.tolist() == [hash64("alice"), hash64(b"a:b"), hash64("émile")]


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("statsd_type", [b"ms", b"h", b"d"])
def test_timers_histograms_and_distributions_weight_by_rate(
    parser: Parser, statsd_type: bytes
) -> None:
    line = b"lat:12.5:7|" + statsd_type + b"|@0.25"
    batch = only_batch(parser(line, NOW_MS), "distribution")
    assert batch.rows() == [("lat", 12.5, NOW_MS, 4.0, False), ("lat", 7.0, NOW_MS, 4.0, False)]


@pytest.mark.parametrize("parser", PARSERS)
def test_tags_are_sorted_and_deduplicated_into_one_key(parser: Parser) -> None:
    lines = b"x:1|c|#region:eu,env:prod,env:prod\nx:2|c|#env:prod,region:eu\nx:3|c"
    batch = only_batch(parser(lines, NOW_MS), "counter")
    assert sorted(batch.key_names) == ["x", "x#env:prod,region:eu"]
    assert batch.row_keys() == ["x#env:prod,region:eu", "x#env:prod,region:eu", "x"]


@pytest.mark.parametrize("parser", PARSERS)
def test_event_time_comes_from_the_t_field_in_unix_seconds(parser: Parser) -> None:
    batch = only_batch(parser(b"x:1|c|T1700000000\nx:1|c", NOW_MS), "counter")
    assert batch.timestamps_ms.tolist() == [1_700_000_000_000, NOW_MS]


@pytest.mark.parametrize("parser", PARSERS)
def test_optional_fields_in_any_order_and_extensions_ignored(parser: Parser) -> None:
    lines = b"x:1|c|#a|@0.5|c:abc123|T10\nx:1|c|e:ext|card:high|T10|@0.5|#a|c:ci-1"
    batch = only_batch(parser(lines, NOW_MS), "counter")
    assert batch.rows() == [("x#a", 2.0, 10_000, 1.0, False)] * 2


@pytest.mark.parametrize("parser", PARSERS)
def test_rare_forms_take_the_exact_path(parser: Parser) -> None:
    lines = "x:1e3|c\nx:-.5E-1|c\nx:5.|c\ntempé:1|g|#lieu:Zürich\nx:12345678901234567|c"
    result = parser(lines.encode(), NOW_MS)
    assert result.batches["counter"].values.tolist() == [1000.0, -0.05, 5.0, 12345678901234567.0]
    assert result.batches["gauge"].key_names == ["tempé#lieu:Zürich"]


@pytest.mark.parametrize("parser", PARSERS)
def test_empty_lines_are_neither_accepted_nor_rejected(parser: Parser) -> None:
    result = parser([b"\n\nx:1|c\n\n", b"", b"y:1|c\n"], NOW_MS)
    assert (result.lines_ok, result.lines_rejected, result.errors) == (2, 0, {})


@pytest.mark.parametrize("parser", PARSERS)
def test_one_datagram_or_many_give_the_same_rows(parser: Parser) -> None:
    lines = [b"a:1|c", b"b:2|g", b"c:x|s", b"d:4|d"]
    assert parser(lines, NOW_MS) == parser(b"\n".join(lines), NOW_MS)


def test_canonical_key_examples() -> None:
    assert canonical_key(b"api.hits", b"region:eu,env:prod") == "api.hits#env:prod,region:eu"
    assert canonical_key(b"api.hits", None) == "api.hits"


def test_negative_zero_is_kept_bit_for_bit() -> None:
    result = parse(b"x:-0|c\nx:-0.0|g", NOW_MS)
    assert np.signbit(result.batches["counter"].values).tolist() == [True]
    assert result == parse_reference(b"x:-0|c\nx:-0.0|g", NOW_MS)


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("empty", [[], b"", [b""], [b"", b"\n"], b"\n\n"])
def test_empty_input_gives_an_empty_result(parser: Parser, empty: bytes | list[bytes]) -> None:
    assert parser(empty, NOW_MS) == ParseResult()


@pytest.mark.parametrize("parser", PARSERS)
def test_long_set_members_hash_like_short_ones(parser: Parser) -> None:
    members = [b"m" * 300, b"short", b"x" * 257 + b"y"]
    result = parser(b"\n".join(b"users:" + member + b"|s" for member in members), NOW_MS)
    assert result.batches["distinct"].values.tolist() == [hash64(member) for member in members]
