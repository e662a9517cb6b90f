"""``GET /metrics``: the node's counters and its aggregates in Prometheus / OpenMetrics form.

``prometheus_client`` is imported here and nowhere else. Nothing is updated per event: at scrape
time one collector reads the counters the node keeps anyway (the same ones ``/v1/status``
shows) and the running aggregates of :mod:`crdtstream.agent.aggregates`, and builds the metric
families; the process collector adds CPU, memory and file descriptors.

Self-metrics are named ``crdtstream_<subsystem>_<what>[_<unit>]``; every integer counter of
``/v1/status`` appears, including ones added later (a counter group without an explicit mapping
here is exported as ``crdtstream_<group>_<name>_total``). Aggregates keep their statsd names
(escaped, see :mod:`crdtstream.agent.naming`) with tags as labels. Two keys that would make an
invalid exposition (a name claimed by two types, or two keys with one series) are never both
emitted: the first in key order wins and the rest are counted in
``crdtstream_export_series_conflicts``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from crdtstream.agent.aggregates import Aggregate, RunningAggregates, items_sorted
from crdtstream.agent.http_input import HttpStats
from crdtstream.agent.mapping import Mapper
from crdtstream.agent.naming import series_of, tag_labels
from crdtstream.ingest import REASONS
from crdtstream.node import Node

__all__ = [
    "QUANTILES",
    "MetricsExporter",
    "SelfMetrics",
    "aggregate_families",
    "counter_families",
    "counter_group",
    "encode",
    "http_families",
    "mapped_series",
    "node_self_metrics",
]

QUANTILES = (0.5, 0.9, 0.99)
_SECONDS_PER_MS = 1e-3


@dataclass(slots=True)
class SelfMetrics:
    """Callables giving the agent's own counters at scrape time.

    ``status`` is the node's ``/v1/status`` document; ``extra`` gives more counter groups
    (HTTP requests, event observer) as ``{group: {name: value}}`` or labelled families.
    """

    status: Callable[[], Mapping[str, Any]]
    extra: list[Callable[[], Iterable[Metric]]] = field(default_factory=list)


def _counter(name: str, documentation: str) -> Metric:
    return Metric(name, documentation, "counter")


def _gauge(name: str, documentation: str) -> Metric:
    return Metric(name, documentation, "gauge")


def _unit_last(name: str) -> str:
    """``bytes_sent`` -> ``sent_bytes``: Prometheus puts the unit last, before ``_total``."""
    parts = name.split("_")
    if "bytes" in parts and parts[-1] != "bytes":
        parts.remove("bytes")
        parts.append("bytes")
    return "_".join(parts)


def counter_group(prefix: str, values: Mapping[str, object], documentation: str) -> list[Metric]:
    """One counter family per integer in ``values``: ``crdtstream_<prefix>_<name>_total``."""
    families = []
    for name, value in sorted(values.items()):
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        family = _counter(f"crdtstream_{prefix}_{_unit_last(name)}", f"{documentation}: {name}")
        family.add_sample(family.name + "_total", {}, float(value))
        families.append(family)
    return families


def _labelled_counter(
    name: str, documentation: str, label: str, values: Mapping[str, int]
) -> Metric:
    family = _counter(name, documentation)
    for value_label, value in sorted(values.items()):
        family.add_sample(name + "_total", {label: value_label}, float(value))
    return family


_REFUSED_EVENTS = (
    "events_future_rejected",
    "events_strong_refused",
    "events_bounded_refused",
    "events_reserved_refused",
)
"""Node counters of statsd events refused before the store, shown as ingest event outcomes."""


def _ingest_families(status: Mapping[str, Any]) -> list[Metric]:
    ingest: Mapping[str, int] = status.get("ingest", {})
    lines = {k.removeprefix("lines_"): v for k, v in ingest.items() if k.startswith("lines_")}
    events = {k.removeprefix("events_"): v for k, v in ingest.items() if k.startswith("events_")}
    node: Mapping[str, int] = status.get("node", {})
    for name in _REFUSED_EVENTS:
        if name in node:
            events[name.removeprefix("events_")] = node[name]
    reasons = dict.fromkeys(REASONS, 0) | dict(status.get("ingest_errors", {}))
    return [
        _labelled_counter(
            "crdtstream_ingest_lines", "statsd lines parsed, by outcome", "outcome", lines
        ),
        _labelled_counter(
            "crdtstream_ingest_events", "statsd events, by what became of them", "outcome", events
        ),
        _labelled_counter(
            "crdtstream_ingest_line_rejections",
            "statsd lines rejected, by reason",
            "reason",
            reasons,
        ),
    ]


def _member_families(status: Mapping[str, Any]) -> list[Metric]:
    members: Mapping[str, Mapping[str, Any]] = status.get("members", {})
    by_status = _gauge("crdtstream_members", "members this node knows of, by state")
    counts: dict[str, int] = dict.fromkeys(("alive", "suspect", "dead", "left"), 0)
    for member in members.values():
        counts[str(member["status"])] = counts.get(str(member["status"]), 0) + 1
    for state, count in sorted(counts.items()):
        by_status.add_sample(by_status.name, {"state": state}, float(count))
    peers = _gauge("crdtstream_member_state", "1 for each member and its current state")
    incarnation = _gauge("crdtstream_member_incarnation", "each member's incarnation")
    for node_id, member in sorted(members.items()):
        peers.add_sample(peers.name, {"member": node_id, "state": str(member["status"])}, 1.0)
        incarnation.add_sample(incarnation.name, {"member": node_id}, member["incarnation"])
    return [by_status, peers, incarnation]


def _raft_families(status: Mapping[str, Any]) -> list[Metric]:
    raft: Mapping[str, Any] | None = status.get("raft")
    if raft is None:
        return []
    families: list[Metric] = []
    role = _gauge("crdtstream_raft_role", "1 for this node's current Raft role")
    role.add_sample(role.name, {"role": str(raft.get("role"))}, 1.0)
    families.append(role)
    for name in ("term", "commit", "applied"):
        if name in raft:
            family = _gauge(f"crdtstream_raft_{name}", f"Raft {name} (index or term number)")
            family.add_sample(family.name, {}, float(raft[name]))
            families.append(family)
    counters = {k: v for k, v in raft.items() if k not in ("term", "commit", "applied")}
    families += counter_group("raft", counters, "Raft and strong-mode client events")
    return families


def _self_families(status: Mapping[str, Any]) -> list[Metric]:
    families = _ingest_families(status) + _member_families(status) + _raft_families(status)
    families += counter_group("gossip", status.get("gossip", {}), "gossip frames and bytes")
    families += counter_group("transport", status.get("transport", {}), "transport packets")
    node = {k: v for k, v in status.get("node", {}).items() if k not in _REFUSED_EVENTS}
    families += counter_group("node", node, "node driver events")
    families += counter_group("quorum", status.get("quorum", {}), "quorum-mode requests")
    catalog: Mapping[str, Any] = status.get("catalog", {})
    keys = _gauge("crdtstream_catalog_keys", "keys in the replicated key catalog")
    keys.add_sample(keys.name, {}, float(catalog.get("keys", 0)))
    conflicts = _gauge("crdtstream_catalog_kind_conflicts", "keys declared with several kinds")
    conflicts.add_sample(conflicts.name, {}, float(len(catalog.get("kind_conflicts", ()))))
    families += [keys, conflicts]
    watermark_ms = status.get("watermark_ms")
    if watermark_ms is not None:
        watermark = _gauge("crdtstream_watermark_seconds", "this node's event-time watermark")
        watermark.add_sample(watermark.name, {}, watermark_ms * _SECONDS_PER_MS)
        families.append(watermark)
    known = {"ingest", "ingest_errors", "members", "raft", "gossip", "transport", "node"}
    known |= {"quorum", "catalog", "watermark_ms", "node_id", "replica"}
    for group, values in sorted(status.items()):
        if group not in known and isinstance(values, Mapping):
            families += counter_group(group, values, f"{group} counters")
    return families


class _Claims:
    """Names already in the exposition, so no key makes it invalid."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.names: set[str] = set()
        self.series: set[tuple[str, frozenset[tuple[str, str]]]] = set()
        for family in families:
            self.names |= _names_of(family.name, family.type)

    def take(self, name: str, typ: str, taken_types: dict[str, str]) -> bool:
        if taken_types.get(name) == typ:
            return True
        names = _names_of(name, typ)
        if name in taken_types or not self.names.isdisjoint(names):
            return False
        self.names |= names
        taken_types[name] = typ
        return True


def _names_of(name: str, typ: str) -> set[str]:
    if typ == "counter":
        return {name, name + "_total", name + "_created"}
    if typ == "summary":
        return {name, name + "_count", name + "_sum", name + "_created"}
    return {name}


_TYPE_OF_KIND = {
    "counter": "counter",
    "distribution": "summary",
    "gauge": "gauge",
    "max": "gauge",
    "min": "gauge",
    "distinct": "gauge",
    "set": "gauge",
}


def _latest_number(aggregate: Aggregate) -> float:
    latest = aggregate.latest
    if latest is None:
        return math.nan
    if isinstance(latest, frozenset | set):
        return float(len(latest))
    return float(latest)  # type: ignore[arg-type]


def _add_series(family: Metric, aggregate: Aggregate, labels: dict[str, str]) -> None:
    name = family.name
    created_s = aggregate.created_ms * _SECONDS_PER_MS
    if family.type == "counter":
        family.add_sample(name + "_total", labels, aggregate.total)
        family.add_sample(name + "_created", labels, created_s)
    elif family.type == "summary":
        latest = aggregate.latest
        has_values = float(getattr(latest, "count", 0.0)) > 0
        for q in QUANTILES:
            value = float(latest.quantile(q)) if has_values else math.nan  # type: ignore[attr-defined]
            family.add_sample(name, {**labels, "quantile": str(q)}, value)
        family.add_sample(name + "_count", labels, aggregate.count)
        family.add_sample(name + "_sum", labels, aggregate.total)
        family.add_sample(name + "_created", labels, created_s)
    else:
        family.add_sample(name, labels, _latest_number(aggregate))


Series = Callable[[str, str], "tuple[str, dict[str, str]] | None"]
"""(key, kind) -> metric name and labels, or None for a key mapped to nothing (dropped)."""


def _default_series(key: str, kind: str) -> tuple[str, dict[str, str]] | None:
    return series_of(key)


def mapped_series(mapper: Mapper) -> Series:
    """Series through statsd_exporter-style mapping rules."""
    return lambda key, kind: mapper.series(key.partition("#")[0], tag_labels(key), kind)


def aggregate_families(
    aggregates: Mapping[str, Aggregate],
    taken: Iterable[Metric],
    series_of_key: Series = _default_series,
) -> tuple[list[Metric], int]:
    """Metric families for ``aggregates`` and the number of keys left out as conflicting."""
    claims = _Claims(taken)
    taken_types: dict[str, str] = {}
    families: dict[str, Metric] = {}
    conflicts = 0
    for key, aggregate in items_sorted(aggregates):
        typ = _TYPE_OF_KIND.get(aggregate.kind)
        mapped = series_of_key(key, aggregate.kind)
        if mapped is None:
            continue  # dropped by a mapping rule
        name, labels = mapped
        if typ == "counter" and name.endswith("_total") and len(name) > 6:
            name = name.removesuffix("_total")  # the exposition adds it back
        series = (name, frozenset(labels.items()))
        if typ is None or series in claims.series or not claims.take(name, typ, taken_types):
            conflicts += 1
            continue
        claims.series.add(series)
        family = families.get(name)
        if family is None:
            family = families[name] = Metric(name, f"statsd {aggregate.kind} {name}", typ)
        _add_series(family, aggregate, labels)
    return list(families.values()), conflicts


class _Families:
    """A collector over a fixed list of families (what the encoders take)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class MetricsExporter:
    """Builds the ``/metrics`` exposition from the node's counters and running aggregates."""

    def __init__(
        self,
        self_metrics: SelfMetrics,
        aggregates: RunningAggregates,
        now_ms: Callable[[], int],
        mapper: Mapper | None = None,
    ) -> None:
        self.self_metrics = self_metrics
        self.aggregates = aggregates
        self.now_ms = now_ms
        self.series: Series = _default_series if mapper is None else mapped_series(mapper)
        self._process = ProcessCollector(registry=None)
        self._platform = PlatformCollector(registry=None)

    def families(self, *, provisional: bool = False) -> list[Metric]:
        """Every family of one scrape: process, self-metrics, then aggregates."""
        now_ms = self.now_ms()
        self.aggregates.fold(now_ms)
        families = [*self._process.collect(), *self._platform.collect()]
        families += _self_families(self.self_metrics.status())
        for extra in self.self_metrics.extra:
            families += extra()
        families += self._export_families(now_ms)
        exported, conflicts = aggregate_families(
            self.aggregates.snapshot(provisional=provisional), families, self.series
        )
        conflict_family = _gauge(
            "crdtstream_export_series_conflicts",
            "keys left out of this exposition because their series collide with another's",
        )
        conflict_family.add_sample(conflict_family.name, {}, float(conflicts))
        return [*families, conflict_family, *exported]

    def _export_families(self, now_ms: int) -> list[Metric]:
        keys = _gauge("crdtstream_export_keys", "keys with running aggregates")
        keys.add_sample(keys.name, {}, float(len(self.aggregates.aggregates)))
        expired = _counter("crdtstream_export_keys_expired", "keys dropped after idle_ttl_ms")
        expired.add_sample(expired.name + "_total", {}, float(self.aggregates.keys_expired))
        refused = _labelled_counter(
            "crdtstream_export_windows_refused",
            "key windows not folded into running values (they would go below zero), by reason",
            "reason",
            dict.fromkeys(("negative_counter_sum", "negative_distribution_value"), 0)
            | self.aggregates.windows_refused,
        )
        families = [keys, expired, refused]
        lag_ms = self.aggregates.finality_lag_ms(now_ms)
        if lag_ms is not None:
            lag = _gauge(
                "crdtstream_finality_lag_seconds",
                "how far the end of the newest final window trails the clock",
            )
            lag.add_sample(lag.name, {}, lag_ms * _SECONDS_PER_MS)
            families.append(lag)
        return families

    def exposition(self, accept: str, *, provisional: bool = False) -> tuple[bytes, str]:
        """The body and content type for a scrape with this ``Accept`` header."""
        return encode(self.families(provisional=provisional), accept)


def encode(families: list[Metric], accept: str) -> tuple[bytes, str]:
    """``families`` in the format ``accept`` asks for (Prometheus text or OpenMetrics)."""
    encoder, content_type = choose_encoder(accept)
    return encoder(_Families(families)), content_type


def http_families(stats: HttpStats) -> list[Metric]:
    """The HTTP server's counters: requests by route, method and status; refusals by reason;
    internal errors (each one a bug)."""
    requests = _counter("crdtstream_http_requests", "HTTP requests answered")
    for (route, method, status), count in sorted(stats.requests.items()):
        labels = {"route": route, "method": method, "status": str(status)}
        requests.add_sample(requests.name + "_total", labels, float(count))
    refusals = _labelled_counter(
        "crdtstream_http_refusals", "HTTP 4xx answers, by reason", "reason", stats.refusals
    )
    errors = _counter("crdtstream_http_internal_errors", "HTTP 500 answers: each one a bug")
    errors.add_sample(errors.name + "_total", {}, float(stats.internal_errors))
    return [requests, refusals, errors]


def _gossip_families(node: Node) -> list[Metric]:
    """Anti-entropy rounds and transfers, and how far each replica's watermark trails ours."""
    families = counter_group(
        "gossip_antientropy",
        asdict(node.engine.gossip.anti_entropy.stats),
        "anti-entropy rounds and transfers",
    )
    own_ms = node.engine.store.watermark_ms
    lag = _gauge(
        "crdtstream_replica_watermark_lag_seconds",
        "how far each replica's last reported watermark trails this node's",
    )
    if own_ms is not None:
        for replica, record in sorted(node.engine.gossip.progress.records.items()):
            seconds = max(0, own_ms - record.watermark_ms) * _SECONDS_PER_MS
            lag.add_sample(lag.name, {"replica": replica}, seconds)
    return [*families, lag]


def node_self_metrics(node: Node) -> SelfMetrics:
    """The self-metrics of ``node``: its status document plus gossip internals."""
    return SelfMetrics(node.status, [lambda: _gossip_families(node)])


def counter_families(
    group: str, values: Callable[[], Mapping[str, int]]
) -> Callable[[], list[Metric]]:
    """A scrape-time source of ``crdtstream_<group>_<name>_total`` counters."""
    return lambda: counter_group(group, values(), f"agent {group} counters")
