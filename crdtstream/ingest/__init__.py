"""statsd / DogStatsD input: the vectorised parser, its per-line oracle and the batch shape.

``parse(datagrams, now_ms)`` turns datagrams into one columnar :class:`KindBatch` per store kind,
ready for the windowed store's ``ingest``; see the README section "statsd / DogStatsD input".
"""

from crdtstream.ingest.batch import KINDS, REASONS, Kind, KindBatch, ParseResult
from crdtstream.ingest.statsd import StatsdParser, parse
from crdtstream.ingest.statsd_reference import (
    MAX_LINE_BYTES,
    LineRejectedError,
    canonical_key,
    parse_line,
    parse_reference,
)

__all__ = [
    "KINDS",
    "MAX_LINE_BYTES",
    "REASONS",
    "Kind",
    "KindBatch",
    "LineRejectedError",
    "ParseResult",
    "StatsdParser",
    "canonical_key",
    "parse",
    "parse_line",
    "parse_reference",
]
