"""statsd_exporter-compatible mapping rules: statsd names to Prometheus names and labels.

A user of prometheus/statsd_exporter keeps their mapping file (``--mapping-config FILE``)::

    mappings:
    - match: "test.dispatcher.*.*.*"
      name: "dispatcher_events_total"
      labels: {processor: "$1", action: "$2", outcome: "$3"}
    - match: "(.*)\\.status\\.(\\d+)"
      match_type: regex
      name: "${1}_status"
      labels: {code: "$2"}
    - match: "debug.*"
      action: drop
      name: "dropped"

Supported: ``match`` with ``match_type`` ``glob`` (the default; ``*`` matches within one
dot-separated component) or ``regex`` (whole-name match), ``name`` and ``labels`` with ``$n`` or
``${n}`` captures, ``action: drop``, ``match_metric_type`` (``counter``, ``gauge``,
``observer``) and ``defaults.match_type``. As in statsd_exporter, globs are tried in file order
first, then regexes in file order; the first match wins, and a rule's labels win over tags of
the same name. Other statsd_exporter fields (``ttl``, ``buckets``, ``quantiles``,
``summary_options``, ``histogram_options``, ``observer_type``, ``scale``, ``help``,
``honor_labels``) are refused at load with the field named, rather than silently ignored.

Errors are found at load and name the rule and field (``mappings[2].name: ...``): an unknown
field, a regex that does not compile, a name or label name that cannot be valid, or two rules
giving one literal name two metric types. A name built from captures that turns out invalid at
run time is escaped like any statsd name, so the exposition stays valid.

PyYAML is imported here and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from crdtstream.agent.naming import label_name, metric_name
from crdtstream.errors import ConfigError

__all__ = ["Mapper", "MappingRule", "load_mapping", "parse_mapping"]

_RULE_FIELDS = frozenset(("match", "match_type", "name", "labels", "action", "match_metric_type"))
_METRIC_TYPES = ("counter", "gauge", "observer")
_KIND_TYPES = {
    "counter": "counter",
    "gauge": "gauge",
    "max": "gauge",
    "min": "gauge",
    "distinct": "gauge",
    "set": "gauge",
    "distribution": "observer",
}
_CAPTURE = re.compile(r"\$(\d+)|\$\{(\d+)\}")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_CACHE_KEYS_MAX = 100_000


@dataclass(frozen=True, slots=True)
class MappingRule:
    """One checked mapping rule."""

    pattern: re.Pattern[str]
    name: str
    labels: tuple[tuple[str, str], ...]
    drop: bool
    metric_type: str | None
    is_glob: bool


def _glob_pattern(glob: str) -> re.Pattern[str]:
    return re.compile("".join("([^.]*)" if c == "*" else re.escape(c) for c in glob))


def _expand(template: str, match: re.Match[str]) -> str:
    def group(found: re.Match[str]) -> str:
        index = int(found.group(1) or found.group(2))
        return (match.group(index) or "") if index <= (match.re.groups or 0) else ""

    return _CAPTURE.sub(group, template)


def _rule(index: int, raw: object, default_type: str) -> MappingRule:
    where = f"mappings[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping, got {raw!r}")
    unknown = set(raw) - _RULE_FIELDS
    if unknown:
        raise ConfigError(
            f"{where}.{sorted(unknown)[0]}: not supported (supported: "
            f"{', '.join(sorted(_RULE_FIELDS))})"
        )
    match, name = raw.get("match"), raw.get("name")
    if not isinstance(match, str) or not match:
        raise ConfigError(f"{where}.match: must be a non-empty string, got {match!r}")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name: must be a non-empty string, got {name!r}")
    match_type = raw.get("match_type", default_type)
    if match_type not in ("glob", "regex"):
        raise ConfigError(f"{where}.match_type: must be glob or regex, got {match_type!r}")
    action = raw.get("action", "map")
    if action not in ("map", "drop"):
        raise ConfigError(f"{where}.action: must be map or drop, got {action!r}")
    metric_type = raw.get("match_metric_type")
    if metric_type is not None and metric_type not in _METRIC_TYPES:
        raise ConfigError(f"{where}.match_metric_type: must be one of {_METRIC_TYPES}")
    try:
        pattern = _glob_pattern(match) if match_type == "glob" else re.compile(match)
    except re.error as error:
        raise ConfigError(f"{where}.match: not a valid regex: {error}") from None
    if action == "map" and not _METRIC_NAME.fullmatch(_CAPTURE.sub("x", name)):
        raise ConfigError(f"{where}.name: {name!r} is not a valid metric name")
    return MappingRule(
        pattern,
        name,
        _labels(where, raw.get("labels", {})),
        action == "drop",
        metric_type,
        match_type == "glob",
    )


def _labels(where: str, raw: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}.labels: must be a mapping, got {raw!r}")
    labels = []
    for label, value in raw.items():
        if not isinstance(label, str) or not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
            raise ConfigError(f"{where}.labels.{label}: not a valid label name")
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{where}.labels.{label}: must be a string, got {value!r}")
        labels.append((label, str(value)))
    return tuple(labels)


def _check_types(rules: list[MappingRule]) -> None:
    """Two rules giving one literal name two metric types would break the exposition."""
    types: dict[str, tuple[int, str]] = {}
    for index, rule in enumerate(rules):
        if rule.drop or rule.metric_type is None or _CAPTURE.search(rule.name):
            continue
        seen = types.setdefault(rule.name, (index, rule.metric_type))
        if seen[1] != rule.metric_type:
            raise ConfigError(
                f"mappings[{index}].name: {rule.name!r} is a {rule.metric_type} here and a "
                f"{seen[1]} in mappings[{seen[0]}]"
            )


class Mapper:
    """Maps a key's statsd name and tags to a metric name and labels (None: dropped)."""

    def __init__(self, rules: list[MappingRule]) -> None:
        # statsd_exporter's order: every glob first, then every regex, each in file order.
        self.rules = [r for r in rules if r.is_glob] + [r for r in rules if not r.is_glob]
        self._cache: dict[tuple[str, str], tuple[str, dict[str, str]] | None] = {}

    def series(
        self, name: str, tags: Mapping[str, str], kind: str
    ) -> tuple[str, dict[str, str]] | None:
        """The series of a key whose statsd name is ``name``, tags already labels."""
        slot = (name, kind)
        if slot in self._cache:
            mapped = self._cache[slot]
        else:
            mapped = self._map(name, _KIND_TYPES.get(kind))
            if len(self._cache) >= _CACHE_KEYS_MAX:
                self._cache.clear()  # a bound on memory; the rules are cheap to rerun
            self._cache[slot] = mapped
        if mapped is None:
            return None
        return mapped[0], {**tags, **mapped[1]}

    def _map(self, name: str, metric_type: str | None) -> tuple[str, dict[str, str]] | None:
        for rule in self.rules:
            if rule.metric_type is not None and rule.metric_type != metric_type:
                continue
            match = rule.pattern.fullmatch(name)
            if match is None:
                continue
            if rule.drop:
                return None
            labels = {label: _expand(value, match) for label, value in rule.labels}
            return metric_name(_expand(rule.name, match)), {
                label_name(k): v for k, v in labels.items()
            }
        return metric_name(name), {}


def parse_mapping(document: object) -> Mapper:
    """A mapper from a parsed statsd_exporter mapping document."""
    if not isinstance(document, Mapping):
        raise ConfigError(f"mapping: the file must hold a mapping, got {type(document).__name__}")
    unknown = set(document) - {"mappings", "defaults"}
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: not supported (supported: mappings, defaults)")
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, Mapping) or set(defaults) - {"match_type"}:
        raise ConfigError("defaults: only match_type is supported")
    default_type = defaults.get("match_type", "glob")
    raw_rules = document.get("mappings") or []
    if not isinstance(raw_rules, list):
        raise ConfigError("mappings: must be a list of rules")
    rules = [_rule(index, raw, default_type) for index, raw in enumerate(raw_rules)]
    _check_types(rules)
    return Mapper(rules)


def load_mapping(path: Path) -> Mapper:
    """Read a statsd_exporter mapping file; a :class:`ConfigError` names what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"mapping_config: cannot read {path}: {error.strerror}") from error
    try:
        document: Any = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"mapping_config: {path} is not valid YAML: {error}") from error
    return parse_mapping(document)
