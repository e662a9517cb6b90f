"""statsd keys as Prometheus series: metric names and labels (no third-party imports).

A key is ``name`` or ``name#tag,tag`` (DESIGN §3). Its name becomes a metric name by replacing
every character outside ``[a-zA-Z0-9_]`` with ``_`` (``api.hits`` -> ``api_hits``) and putting
``_`` in front of a leading digit, as prometheus/statsd_exporter escapes names. Each DogStatsD
tag ``k:v`` becomes the label ``k="v"``; a tag without a value (``canary``) becomes
``canary="true"``. Label names are escaped like metric names; names Prometheus reserves
(``__*``) or that summaries use (``quantile``, ``le``) get a ``tag_`` prefix. Two tags that
escape to the same label name keep their values joined by ``,`` in sorted order.
"""

from __future__ import annotations

import functools
import re

__all__ = ["RESERVED_LABELS", "label_name", "metric_name", "series_of", "tag_labels"]

_INVALID = re.compile(r"[^a-zA-Z0-9_]")
SERIES_CACHE_KEYS = 100_000
RESERVED_LABELS = frozenset(("quantile", "le"))
"""Label names a tag may not take as they are: the exposition uses them itself."""


def metric_name(name: str) -> str:
    """A valid Prometheus metric name for the statsd name ``name`` (never empty)."""
    escaped = _INVALID.sub("_", name) or "_"
    return "_" + escaped if escaped[0].isdigit() else escaped


def label_name(tag_name: str) -> str:
    """A valid label name for a tag's name, clear of reserved names."""
    escaped = metric_name(tag_name)
    if escaped.startswith("__") or escaped in RESERVED_LABELS:
        return "tag_" + escaped
    return escaped


def tag_labels(key: str) -> dict[str, str]:
    """The labels of ``key``'s tags: ``"api.hits#env:prod"`` -> ``{"env": "prod"}``."""
    _, _, tags = key.partition("#")
    labels: dict[str, list[str]] = {}
    if tags:
        for tag in tags.split(","):
            tag_name, separator, value = tag.partition(":")
            labels.setdefault(label_name(tag_name), []).append(value if separator else "true")
    return {label: ",".join(sorted(v)) for label, v in labels.items()}


@functools.lru_cache(maxsize=SERIES_CACHE_KEYS)
def series_of(key: str) -> tuple[str, dict[str, str]]:
    """The metric name and labels of ``key``: ``"api.hits#env:prod"`` ->
    ``("api_hits", {"env": "prod"})``. Cached, as every scrape asks again for every key: the
    labels returned are shared and must not be modified."""
    return metric_name(key.partition("#")[0]), tag_labels(key)
