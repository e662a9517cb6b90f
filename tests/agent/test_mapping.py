"""statsd_exporter mapping files: the same names and labels, errors named at load."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from crdtstream.agent.aggregates import Aggregate
from crdtstream.agent.mapping import load_mapping, parse_mapping
from crdtstream.agent.metrics import aggregate_families, mapped_series
from crdtstream.agent.settings import load_settings
from crdtstream.errors import ConfigError
from tests.agent.test_metrics import _Collected

MAPPING = """
mappings:
- match: "test.dispatcher.*.*.*"
  name: "dispatcher_events_total"
  labels:
    processor: "$1"
    action: "$2"
    outcome: "$3"
    job: "test_dispatcher"
- match: "(.*)\\\\.status\\\\.(\\\\d+)"
  match_type: regex
  name: "${1}_status"
  labels:
    code: "$2"
- match: "debug.*"
  action: drop
  name: "dropped"
- match: "test.*.*.*"
  match_type: regex
  name: "never_reached_for_dispatcher"
- match: "latency.*"
  match_metric_type: observer
  name: "request_latency_seconds"
  labels:
    route: "$1"
"""


def test_globs_regexes_captures_and_drops_as_statsd_exporter_does(tmp_path: Path) -> None:
    path = tmp_path / "mapping.yml"
    path.write_text(MAPPING)
    mapper = load_mapping(path)
    assert mapper.series(
        "test.dispatcher.fooProcessor.send.succeeded", {"env": "p"}, "counter"
    ) == (
        "dispatcher_events_total",
        {
            "env": "p",
            "processor": "fooProcessor",
            "action": "send",
            "outcome": "succeeded",
            "job": "test_dispatcher",
        },
    )
    assert mapper.series("web.status.404", {}, "counter") == ("web_status", {"code": "404"})
    assert mapper.series("debug.anything", {}, "gauge") is None
    assert mapper.series("latency.checkout", {}, "distribution") == (
        "request_latency_seconds",
        {"route": "checkout"},
    )
    # match_metric_type: a gauge named like the observer rule falls through unmapped.
    assert mapper.series("latency.checkout", {}, "gauge") == ("latency_checkout", {})
    # A rule's labels win over tags of the same name.
    assert mapper.series("web.status.500", {"code": "tag"}, "counter") == (
        "web_status",
        {"code": "500"},
    )


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"mappings": [{"match": "a.*", "name": "a", "ttl": "1m"}]}, r"mappings\[0\]\.ttl"),
        (
            {"mappings": [{"match": "(", "match_type": "regex", "name": "a"}]},
            r"mappings\[0\]\.match",
        ),
        ({"mappings": [{"match": "a.*", "name": "1bad"}]}, r"mappings\[0\]\.name"),
        (
            {"mappings": [{"match": "a", "name": "a", "labels": {"__x": "1"}}]},
            r"mappings\[0\]\.labels",
        ),
        (
            {
                "mappings": [
                    {"match": "a.*", "name": "same", "match_metric_type": "counter"},
                    {"match": "b.*", "name": "same", "match_metric_type": "gauge"},
                ]
            },
            r"mappings\[1\]\.name",
        ),
        ({"mapping": []}, "mapping"),
    ],
)
def test_bad_rules_are_named_at_load(document: object, field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}"):
        parse_mapping(document)


def test_the_exposition_uses_the_mapping_and_stays_valid(tmp_path: Path) -> None:
    path = tmp_path / "mapping.yml"
    path.write_text(MAPPING)
    aggregates = {
        "test.dispatcher.p.send.ok#env:prod": Aggregate("counter", total=3.0),
        "web.status.404": Aggregate("counter", total=1.0),
        "debug.noise": Aggregate("gauge", latest=1.0),
        "other.thing": Aggregate("gauge", latest=2.0),
    }
    families, conflicts = aggregate_families(aggregates, [], mapped_series(load_mapping(path)))
    from prometheus_client.exposition import generate_latest

    text = generate_latest(_Collected(families)).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("web_status_total", (("code", "404"),))] == 1.0
    assert samples[("other_thing", ())] == 2.0
    dispatcher = [name for name, _ in samples if name.startswith("dispatcher_events")]
    assert "dispatcher_events_total" in dispatcher
    assert not any(name.startswith("debug") for name, _ in samples)
    assert conflicts == 0


def test_the_agent_loads_the_mapping_file_from_its_config(tmp_path: Path) -> None:
    (tmp_path / "mapping.yml").write_text("mappings:\n- match: a.*\n  name: b\n  ttl: 1m\n")
    config = tmp_path / "agent.toml"
    config.write_text(f'node_id = "n1"\nmapping_config = "{tmp_path / "mapping.yml"}"\n')
    with pytest.raises(ConfigError, match=r"^mappings\[0\]\.ttl"):
        load_settings(config, {})
