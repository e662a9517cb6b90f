"""The statsd parsers every parser test runs: the vectorised parser with each of its scanners,
and the per-line oracle."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import pytest

from crdtstream.ingest import ParseResult, parse, parse_reference
from crdtstream.ingest.statsd import COMPILED

Parser = Callable[..., ParseResult]
# Without a C compiler at install time only the numpy scanner exists; test_scanners then fails
# once, saying so, instead of every parser test failing.
SCANNERS: tuple[Literal["compiled", "numpy"], ...] = (
    ("compiled", "numpy") if COMPILED else ("numpy",)
)
VECTORISED: dict[str, Parser] = {
    scanner: functools.partial(parse, scanner=scanner) for scanner in SCANNERS
}
PARSERS = [
    *(pytest.param(parser, id=f"vectorised-{name}") for name, parser in VECTORISED.items()),
    pytest.param(parse_reference, id="per-line"),
]
