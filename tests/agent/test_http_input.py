"""HTTP input hygiene: canonical keys, checks before writes, counted refusals, listing, and a
fuzz run that must never see a 5xx."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable

import pytest
from aiohttp import ClientResponseError
from aiohttp.test_utils import TestClient

from crdtstream.agent.http_input import InputError, parse_key, parse_write_body
from crdtstream.node import Node
from tests.node.test_http_api import _url, run

pytestmark = [pytest.mark.timeout(120)]


def test_http_keys_are_canonical_like_statsd_keys() -> None:
    assert parse_key("hits#region:eu,env:prod,env:prod") == "hits#env:prod,region:eu"
    assert parse_key("a/b") == "a/b"
    for bad in ("with space", "nul\x00", "tab\there", "#env:prod", "hits#", "hits#a,,b", ""):
        with pytest.raises(InputError):
            parse_key(bad)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"op": "add", "value": true}', "bad_type"),
        (b'{"op": "add", "value": NaN}', "non_finite_number"),
        (b'{"op": "add", "value": 1e400}', "non_finite_number"),
        (b'{"op": "add", "value": ' + b"9" * 5000 + b"}", "bad_json"),
        (b"[" * 60_000, "json_too_deep"),
        (b'{"op": "add", "value": [[[[[1]]]]]}', "json_too_deep"),
        (b'{"op": "add", "value": 1, "colour": "red"}', "unknown_field"),
        (b'{"op": "insert", "value": 3}', "bad_type"),
        (b'{"op": "add", "value": 1, "timestamp_ms": 1.5}', "bad_type"),
        (b'\xff\xfe{"op"}', "bad_encoding"),
    ],
)
def test_bad_bodies_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(InputError) as refused:
        parse_write_body(body, None)
    assert refused.value.reason == reason
    assert 400 <= refused.value.status < 500


async def _hygiene(client: TestClient) -> None:  # type: ignore[type-arg]
    await client.post("/v1/ingest", data=b"hits:2|c|#env:prod,region:eu")
    # Tags in another order read the same key statsd wrote.
    read = await client.get(_url("hits#region:eu,env:prod"))
    assert read.status == 200
    assert (await read.json())["key"] == "hits#env:prod,region:eu"
    # A refused write creates nothing and fixes no kind.
    for body in ({"op": "add", "value": float("nan")}, {"op": "add", "value": True}):
        response = await client.post(_url("fresh"), data=json.dumps(body))
        assert response.status == 400
    assert (await client.get(_url("fresh"))).status == 404
    assert (await client.post(_url("fresh"), json={"op": "set", "value": 2.5})).status == 200
    assert (await (await client.get(_url("fresh"))).json())["kind"] == "gauge"
    deep = await client.post(_url("fresh"), data=b"[" * 60_000)
    assert deep.status == 400
    assert (await client.get(_url("with space"))).status == 400
    # "/" is allowed, as statsd allows it, sent as %2F.
    assert (await client.post(_url("a/b"), json={"op": "add", "value": 1})).status == 200
    assert (await (await client.get("/v1/keys/a%2Fb")).json())["key"] == "a/b"
    reserved = await client.post(_url("__crdtstream.export_done"), json={"op": "add", "value": 1})
    assert reserved.status == 403
    # A strong key read at a weaker consistency is served from this replica and labelled.
    body = {"op": "add", "value": 4, "timestamp_ms": 1_700_000_000_000}
    assert (await client.post(_url("quota.api"), json=body)).status == 200
    weak = await client.get(_url("quota.api") + "?consistency=eventual")
    assert weak.status == 200, await weak.text()
    answer = await weak.json()
    assert (answer["consistency"], answer["mode"]) == ("eventual", "strong")
    assert sum(window["value"] for window in answer["windows"]) == 4
    metrics = await (await client.get("/metrics")).text()
    assert 'crdtstream_http_refusals_total{reason="bad_type"} 1.0' in metrics
    assert 'crdtstream_http_refusals_total{reason="json_too_deep"} 1.0' in metrics
    assert "crdtstream_http_internal_errors_total 0.0" in metrics


def test_http_input_hygiene() -> None:
    run(_hygiene)


async def _listing(client: TestClient) -> None:  # type: ignore[type-arg]
    lines = b"\n".join(f"app.k{index:02d}:1|c".encode() for index in range(25))
    await client.post("/v1/ingest", data=lines + b"\nother:1|g")
    seen: list[str] = []
    after = ""
    for _ in range(10):
        page = await (
            await client.get("/v1/keys", params={"prefix": "app.", "limit": "10", "after": after})
        ).json()
        seen += [entry["key"] for entry in page["keys"]]
        assert all(entry["kind"] == "counter" for entry in page["keys"])
        assert all(entry["mode"] == "eventual" for entry in page["keys"])
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert seen == [f"app.k{index:02d}" for index in range(25)]
    assert (await client.get("/v1/keys", params={"limit": "0"})).status == 400
    assert (await client.get("/v1/keys", params={"limt": "5"})).status == 400


def test_keys_are_listed_by_prefix_in_pages() -> None:
    run(_listing)


FUZZ_SEED = 20261203
FUZZ_REQUESTS = 1_500
_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")
_PATHS = (
    "/v1/keys/{key}",
    "/v1/keys",
    "/v1/ingest",
    "/v1/status",
    "/metrics",
    "/v1/keys/{key}/extra",
    "/nowhere",
    "/v1/keys/{key}?consistency={text}",
    "/v1/keys?prefix={text}&limit={text}&after={text}",
    "/metrics?provisional={text}",
)
_KEYS = ("hits", "quota.x", "q.x", "a%2Fb", "x%23env:prod,b", "%00", "%FF%FE", "k" * 8100, "%20")


def _fuzz_text(rng: random.Random) -> str:
    choices = [
        "",
        "1",
        "-1",
        "eventual",
        "strong",
        "%00",
        "%ZZ",
        "10000000000",
        "\u00e9",
        "a" * 300,
    ]
    return rng.choice(choices)


def _fuzz_body(rng: random.Random) -> bytes:
    scalars: list[object] = [1, -1, 0.5, 1e308, 2**80, True, None, "x", "", [], {}, "\u0000"]
    ops = ["add", "set", "observe", "insert", "remove", "conditional_add", "explode", 3]
    shapes: list[Callable[[], bytes]] = [
        lambda: json.dumps({"op": rng.choice(ops), "value": rng.choice(scalars)}).encode(),
        lambda: json.dumps(
            {
                "op": rng.choice(ops),
                "value": rng.choice(scalars),
                "limit": rng.choice(scalars),
                "timestamp_ms": rng.choice(scalars),
                "kind": rng.choice(["counter", "set", "gauge", "nonsense", 1]),
            }
        ).encode(),
        lambda: b"[" * rng.choice([10, 1000, 50_000]),
        lambda: b'{"op": "add", "value": ' + b"9" * rng.choice([10, 5000]) + b"}",
        lambda: bytes(rng.getrandbits(8) for _ in range(rng.randrange(64))),
        lambda: b"hits:1|c\nbad line\n\xff:1|c|#\x00",
        lambda: b"",
        lambda: '{"op": "add", "value": 1}'.encode("utf-16"),
    ]
    return rng.choice(shapes)()


async def _fuzz(client: TestClient) -> None:  # type: ignore[type-arg]
    rng = random.Random(FUZZ_SEED)
    statuses: dict[int, int] = {}
    for index in range(FUZZ_REQUESTS):
        path = rng.choice(_PATHS).format(key=rng.choice(_KEYS), text=_fuzz_text(rng))
        headers: dict[str, str] = rng.choice(
            [
                {},
                {"Content-Type": "application/json; charset=latin-1"},
                {"Content-Encoding": "gzip"},
                {"Idempotency-Key": "k" * rng.choice([1, 5000])},
                {"Accept": "application/openmetrics-text; version=1.0.0"},
            ]
        ).copy()
        method = rng.choice(_METHODS)
        data = _fuzz_body(rng) if method in ("POST", "PUT", "PATCH") else None
        # A body aiohttp cannot decode ends the connection after the answer: one per request.
        headers["Connection"] = "close"
        try:
            response = await client.request(method, path, data=data, headers=headers)
            await response.read()
            status = response.status
        except ClientResponseError as error:
            # aiohttp's server answers a request line over its limit with a 400 the client
            # cannot parse; the status is still the server's.
            status = error.status
        statuses[status] = statuses.get(status, 0) + 1
        # 503 is a strong/quorum key without a majority: an answer, not a fault.
        assert status < 500 or status == 503, (
            f"seed={FUZZ_SEED} request {index}: {method} {path} -> {status}"
        )
    assert statuses.get(200, 0) > 0, statuses
    assert statuses.get(400, 0) > 0, statuses
    metrics = await (await client.get("/metrics")).text()
    assert "crdtstream_http_internal_errors_total 0.0" in metrics


def test_fuzzed_requests_never_get_a_server_error() -> None:
    run(_fuzz)


async def _a_bug_is_a_counted_500(client: TestClient) -> None:  # type: ignore[type-arg]
    response = await client.get("/v1/status")
    assert response.status == 500
    assert (await response.json())["reason"] == "internal_error"
    metrics = await (await client.get("/metrics")).text()
    assert "crdtstream_http_internal_errors_total 1.0" in metrics
    assert 'route="/v1/status",status="500"' in metrics


def test_an_escaping_exception_is_a_logged_counted_500(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_status(self: Node) -> dict[str, object]:
        raise RuntimeError("a bug in a handler")

    # The status document also feeds /metrics: break it for the HTTP route only, once.
    calls = {"count": 0}
    original = Node.status

    def first_call_breaks(self: Node) -> dict[str, object]:
        calls["count"] += 1
        return broken_status(self) if calls["count"] == 1 else original(self)

    monkeypatch.setattr(Node, "status", first_call_breaks)
    with caplog.at_level(logging.ERROR, logger="crdtstream.http"):
        run(_a_bug_is_a_counted_500)
    assert any("internal error serving GET /v1/status" in r.getMessage() for r in caplog.records)
