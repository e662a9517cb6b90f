"""Malformed statsd lines: each is rejected for its documented reason, counted once, and the
good lines around it in the same datagram are kept, by both parsers alike."""

from __future__ import annotations

import pytest

from crdtstream.ingest import REASONS, parse_reference
from tests.ingest.parsers import PARSERS, VECTORISED, Parser

MALFORMED: list[tuple[bytes, str]] = [
    (b"x" * 9000 + b":1|c", "oversize_line"),
    (b"_e{5,4}:title|text|#env:prod", "unsupported_event"),
    (b"_e{1,1}:1|c", "unsupported_event"),
    (b"_sc|db.up|0|#env:prod", "unsupported_event"),
    (b"api.hits", "missing_value"),
    (b"api.hits|c", "missing_value"),
    (b"api.hits:|c", "missing_value"),
    (b"api.hits:1::2|d", "missing_value"),
    (b"users:|s", "missing_value"),
    (b"api.hits:1", "missing_type"),
    (b"api.hits:1|", "missing_type"),
    (b"api.hits:1|x", "unknown_type"),
    (b"api.hits:1|C", "unknown_type"),
    (b"api.hits:1|cc", "unknown_type"),
    (b"api.hits:1|c\r", "unknown_type"),
    (b"api.hits:1|c||#a", "empty_field"),
    (b"api.hits:1|c|", "empty_field"),
    (b"api.hits:1|c|@0.5|@0.5", "duplicate_field"),
    (b"api.hits:1|c|#a|#b", "duplicate_field"),
    (b"api.hits:1|g|T1|T2", "duplicate_field"),
    (b"api.hits:1|c|X", "unknown_field"),
    (b"api.hits:1|c|c", "unknown_field"),
    (b"api.hits:1|c|:x", "unknown_field"),
    (b"api.hits:1|c|@abc", "bad_rate"),
    (b"api.hits:1|c|@", "bad_rate"),
    (b"api.hits:1|c|@0", "rate_out_of_range"),
    (b"api.hits:1|c|@1.5", "rate_out_of_range"),
    (b"api.hits:1|c|@-0.5", "rate_out_of_range"),
    (b"api.hits:1|g|Tabc", "bad_timestamp"),
    (b"api.hits:1|g|T", "bad_timestamp"),
    (b"api.hits:1|g|T-5", "bad_timestamp"),
    (b"api.hits:1|g|T1.5", "bad_timestamp"),
    (b"api.hits:1|g|T1234567890123", "bad_timestamp"),
    (b":1|c", "empty_name"),
    (b"api hits:1|c", "bad_name"),
    (b"api#hits:1|c", "bad_name"),
    (b"api\thits:1|c", "bad_name"),
    (b"api.\xff:1|c", "non_utf8_name"),
    (b"api.hits:1|c|#", "bad_tag"),
    (b"api.hits:1|c|#a,,b", "bad_tag"),
    (b"api.hits:1|c|#a,", "bad_tag"),
    (b"api.hits:1|c|#a,b c", "bad_tag"),
    (b"api.hits:1|c|#env:\xff", "non_utf8_tag"),
    (b"api.hits:abc|c", "bad_number"),
    (b"api.hits: 1|c", "bad_number"),
    (b"api.hits:1e999|c", "bad_number"),
    (b"api.hits:nan|c", "bad_number"),
    (b"api.hits:inf|ms", "bad_number"),
    (b"api.hits:1_000|c", "bad_number"),
    (b"api.hits:0x10|c", "bad_number"),
    (b"api.hits:++1|g", "bad_number"),
    (b"api.hits:.|h", "bad_number"),
    (b"api.hits:1.2.3|d", "bad_number"),
]

GOOD_BEFORE = b"before:1|c|#env:prod"
GOOD_AFTER = b"after:2.5|ms|@0.5"


def test_every_reason_has_a_malformed_form() -> None:
    assert {reason for _, reason in MALFORMED} == set(REASONS)
    assert len(MALFORMED) >= 20


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize(("line", "reason"), MALFORMED, ids=[r for _, r in MALFORMED])
def test_malformed_line_is_counted_and_the_rest_kept(
    parser: Parser, line: bytes, reason: str
) -> None:
    result = parser(GOOD_BEFORE + b"\n" + line + b"\n" + GOOD_AFTER, 1_000)
    assert result.errors == {reason: 1}
    assert (result.lines_ok, result.lines_rejected) == (2, 1)
    assert result.batches["counter"].rows() == [("before#env:prod", 1.0, 1_000, 1.0, False)]
    assert result.batches["distribution"].rows() == [("after", 2.5, 1_000, 2.0, False)]


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize(("line", "reason"), MALFORMED, ids=[r for _, r in MALFORMED])
def test_malformed_line_alone(parser: Parser, line: bytes, reason: str) -> None:
    result = parser(line, 1_000)
    assert (result.batches, result.errors, result.lines_ok) == ({}, {reason: 1}, 0)


@pytest.mark.parametrize(("line", "reason"), MALFORMED, ids=[r for _, r in MALFORMED])
def test_both_parsers_agree_on_each_malformed_line(line: bytes, reason: str) -> None:
    datagrams = [GOOD_BEFORE, line, line + b"\n" + GOOD_AFTER, line]
    for scanner, vectorised_parse in VECTORISED.items():
        assert vectorised_parse(datagrams, 7) == parse_reference(datagrams, 7), scanner


@pytest.mark.parametrize("parser", PARSERS)
def test_max_line_bytes_is_a_parameter(parser: Parser) -> None:
    line = b"api.hits:1|c|#" + b"a" * 50
    assert parser(line, 0, max_line_bytes=len(line)).lines_ok == 1
    assert parser(line, 0, max_line_bytes=len(line) - 1).errors == {"oversize_line": 1}


@pytest.mark.parametrize("parser", PARSERS)
def test_a_datagram_of_garbage_rejects_every_line(parser: Parser) -> None:
    result = parser([b"\x00\x01\x02", b"|||\n:::\n\xff\xfe"], 0)
    assert result.batches == {}
    assert result.lines_ok == 0
    assert result.lines_rejected == 4 == sum(result.errors.values())
