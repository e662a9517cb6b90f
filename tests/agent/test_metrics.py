"""``/metrics``: self-metrics and running aggregates, parsed back with prometheus_client."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from crdtstream.agent.aggregates import Aggregate, RunningAggregates, node_window_source
from crdtstream.agent.metrics import MetricsExporter, aggregate_families, node_self_metrics
from crdtstream.ingest import LineRejectedError, canonical_key
from crdtstream.window.kinds.distribution import DistributionValue
from tests.agent.support import START_MS, Solo
from tests.node.engine_calls import OP_OF_KIND, write
from tests.node.test_node_simulation import Cluster


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def _one(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_counter_totals_run_on_after_their_windows_expire() -> None:
    solo = Solo()
    expected_total = 0.0
    for second in range(10):
        write(solo.node, "hits#region:eu,env:prod", "add", second + 1)
        expected_total += second + 1
        write(solo.node, "temperature", OP_OF_KIND["gauge"], kind="gauge", value=float(second))
        write(
            solo.node,
            "latency",
            OP_OF_KIND["distribution"],
            kind="distribution",
            value=float(second * 10),
        )
        write(solo.node, "users", OP_OF_KIND["set"], kind="set", value=f"user-{second}")
        write(solo.node, "users", OP_OF_KIND["set"], kind="set", value=f"user-{second + 1}")
        solo.run(1_000)
    solo.run(2_000)
    # Retention keeps 3 windows: most of what the totals hold has expired from the store.
    assert len(solo.node.engine.store.window_starts()) < 10
    samples = _samples(solo.scrape())
    assert _one(samples, "hits_total", env="prod", region="eu") == expected_total
    assert _one(samples, "hits_created", env="prod", region="eu") == START_MS / 1000
    assert _one(samples, "temperature") == 9.0
    assert _one(samples, "users") == 2.0  # the newest final window's set
    assert _one(samples, "latency_count") == 10.0
    assert _one(samples, "latency_sum") == 450.0
    assert math.isclose(_one(samples, "latency", quantile="0.5"), 90.0, rel_tol=0.02)
    assert _one(samples, "crdtstream_export_series_conflicts") == 0.0


def test_only_final_windows_unless_provisional_is_asked_for() -> None:
    solo = Solo()
    write(solo.node, "hits", OP_OF_KIND["counter"], kind="counter", value=3)
    solo.run(3_000)
    write(
        solo.node, "hits", OP_OF_KIND["counter"], kind="counter", value=4
    )  # in a window not final yet
    final = _samples(solo.scrape())
    provisional = _samples(solo.scrape(provisional=True))
    assert _one(final, "hits_total") == 3.0
    assert _one(provisional, "hits_total") == 7.0
    # The provisional view is a copy: the running total did not take the open window.
    assert _one(_samples(solo.scrape()), "hits_total") == 3.0
    solo.run(3_000)
    assert _one(_samples(solo.scrape()), "hits_total") == 7.0


def test_idle_keys_drop_out_after_the_ttl() -> None:
    solo = Solo(idle_ttl_ms=5_000)
    write(solo.node, "once", OP_OF_KIND["counter"], kind="counter", value=1)
    write(solo.node, "steady", OP_OF_KIND["counter"], kind="counter", value=1)
    solo.run(3_000)
    assert ("once_total", frozenset()) in _samples(solo.scrape())
    for _ in range(8):
        write(solo.node, "steady", OP_OF_KIND["counter"], kind="counter", value=1)
        solo.run(1_000)
    samples = _samples(solo.scrape())
    assert ("once_total", frozenset()) not in samples
    assert _one(samples, "steady_total") == 9.0
    assert _one(samples, "crdtstream_export_keys_expired_total") == 1.0


def test_self_metrics_count_what_status_counts() -> None:
    solo = Solo()
    solo.node.ingest_statsd(b"a:1|c\nb:2|g\nnot a line\nc:x|c")
    samples = _samples(solo.scrape())
    assert _one(samples, "crdtstream_ingest_lines_total", outcome="ok") == 2.0
    assert _one(samples, "crdtstream_ingest_lines_total", outcome="rejected") == 2.0
    assert _one(samples, "crdtstream_ingest_events_total", outcome="accepted") == 2.0
    rejections = {
        dict(labels)["reason"]: value
        for (name, labels), value in samples.items()
        if name == "crdtstream_ingest_line_rejections_total"
    }
    assert sum(rejections.values()) == 2.0
    assert _one(samples, "crdtstream_members", state="alive") == 1.0
    assert ("process_cpu_seconds_total", frozenset()) in samples


def test_colliding_names_are_left_out_not_emitted_broken() -> None:
    aggregates = {
        "a.b": Aggregate("counter", total=1.0),
        "a_b": Aggregate("counter", total=2.0),  # the same series as a.b
        "a_b_total": Aggregate("gauge", latest=1.0),  # the counter's sample name
        "x": Aggregate("gauge", latest=1.0),
        "x#k:v": Aggregate("counter", total=1.0),  # the same name, another type
        "crdtstream_members": Aggregate("gauge", latest=1.0),
    }
    families, conflicts = aggregate_families(aggregates, _members_family())
    assert conflicts == 4
    text = generate_latest(_Collected(families)).decode()
    assert _samples(text) == {
        ("a_b_total", frozenset()): 1.0,
        ("a_b_created", frozenset()): 0.0,
        ("x", frozenset()): 1.0,
    }


def _members_family() -> list[Metric]:
    return [Metric("crdtstream_members", "members", "gauge")]


class _Collected:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


_STATSD_TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters=":|,#"),
    min_size=1,
    max_size=12,
)
_TAG = st.one_of(_STATSD_TEXT, st.tuples(_STATSD_TEXT, _STATSD_TEXT).map(":".join))


def _key(name: str, tags: list[str]) -> str | None:
    try:
        return canonical_key(name.encode(), ",".join(tags).encode() if tags else None)
    except LineRejectedError:
        return None  # not a valid statsd key: statsd would have refused the line


def _aggregate(kind: str, number: float) -> Aggregate:
    aggregate = Aggregate(kind)
    if kind == "set":
        aggregate.fold(frozenset({"x"}), 1_000)
    elif kind != "distribution":
        aggregate.fold(number, 1_000)
    return aggregate


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            _STATSD_TEXT,
            st.lists(_TAG, max_size=4),
            st.sampled_from(["counter", "gauge", "set", "distinct", "max", "distribution"]),
            st.floats(allow_nan=False, allow_infinity=False, width=32),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_any_valid_statsd_keys_give_a_valid_exposition(
    entries: list[tuple[str, list[str], str, float]],
) -> None:
    aggregates = {}
    for name, tags, kind, number in entries:
        key = _key(name, tags)
        if key is not None:
            aggregates[key] = _aggregate(kind, number)
    families, conflicts = aggregate_families(aggregates, [])
    # prometheus_client checks every name and label as it encodes and parses.
    text = generate_latest(_Collected(families)).decode()
    parsed = list(text_string_to_metric_families(text))
    openmetrics = generate_openmetrics(_Collected(families)).decode()  # type: ignore[no-untyped-call]
    parsed_openmetrics = list(parse_openmetrics(openmetrics))  # type: ignore[no-untyped-call]
    series = {
        (sample.name, frozenset(sample.labels.items()))
        for family in parsed
        for sample in family.samples
        if "quantile" not in sample.labels
    }
    samples = [s for family in parsed for s in family.samples if "quantile" not in s.labels]
    assert len(series) == len(samples), text  # no series twice
    assert len(parsed_openmetrics) == len(families)
    # Every valid key is either exported (one label set in its family) or counted as left out.
    exported = sum(
        len({frozenset(sample.labels.items()) for sample in family.samples})
        for family in families
        if family.type != "summary"
    ) + sum(1 for family in families for s in family.samples if s.name.endswith("_count"))
    assert exported + conflicts == len(aggregates)


def test_the_distribution_value_type_gives_quantiles() -> None:
    solo = Solo()
    for value in (1.0, 2.0, 3.0, 100.0):
        write(solo.node, "d", OP_OF_KIND["distribution"], kind="distribution", value=value)
    solo.run(3_000)
    aggregate = solo.aggregates.aggregates["d"]
    assert isinstance(aggregate.latest, DistributionValue)
    samples = _samples(solo.scrape(accept="application/openmetrics-text; version=1.0.0"))
    assert _one(samples, "d_count") == 4.0


def test_each_replica_has_a_watermark_lag_and_members_a_state() -> None:
    cluster = Cluster(5, ["a", "b"], None)
    write(cluster.nodes["b"], "hits", "add", 1)
    cluster.run(3_000)
    node = cluster.nodes["a"]
    exporter = MetricsExporter(
        node_self_metrics(node), RunningAggregates(node_window_source(node)), cluster.clock.now_ms
    )
    samples = _samples(exporter.exposition("")[0].decode())
    lags = {
        dict(labels)["replica"]: value
        for (name, labels), value in samples.items()
        if name == "crdtstream_replica_watermark_lag_seconds"
    }
    replicas = {n.identity.replica for n in cluster.nodes.values()}
    assert set(lags) == replicas
    assert all(0.0 <= lag < 1.0 for lag in lags.values()), lags
    assert _one(samples, "crdtstream_member_state", member="b", state="alive") == 1.0
    assert _one(samples, "crdtstream_gossip_antientropy_rounds_total") > 0
    assert _one(samples, "hits_total") == 1.0
