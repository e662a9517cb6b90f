"""Watch over HTTP: Server-Sent Events and the long poll, against a real node on loopback."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from crdtstream.agent.http_input import InputError
from crdtstream.agent.watching import escape_glob, parse_wait
from tests.node.test_http_api import run

pytestmark = [pytest.mark.timeout(60)]


async def _write(client: TestClient, key: str, amount: int) -> None:  # type: ignore[type-arg]
    response = await client.post(
        f"/v1/keys/{quote(key, safe='')}", json={"op": "add", "value": amount}
    )
    assert response.status == 200, await response.text()


async def _next_event(stream: object) -> tuple[str, int, dict[str, object]]:
    """Read one Server-Sent Event: its name, id and JSON data."""
    fields: dict[str, str] = {}
    while True:
        line = (await asyncio.wait_for(stream.readline(), 10)).decode().rstrip("\n")  # type: ignore[attr-defined]
        if not line:
            if fields:
                return fields["event"], int(fields["id"]), json.loads(fields["data"])
            continue
        name, _, value = line.partition(": ")
        fields[name] = value


async def _sse(client: TestClient) -> None:  # type: ignore[type-arg]
    response = await client.get("/v1/watch", params={"prefix": "api."})
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    await _write(client, "other", 1)
    await _write(client, "api.hits", 2)
    name, event_id, data = await _next_event(response.content)
    assert (name, data["key"], data["value"], data["mode"]) == (
        "change",
        "api.hits",
        2.0,
        "eventual",
    )
    assert event_id == data["sequence"]
    response.close()
    # Reconnecting with Last-Event-ID resumes after it: only the later change arrives.
    await _write(client, "api.hits", 3)
    again = await client.get(
        "/v1/watch", params={"prefix": "api."}, headers={"Last-Event-ID": str(event_id)}
    )
    name, _, data = await _next_event(again.content)
    assert (name, data["key"], data["value"]) == ("change", "api.hits", 5.0)
    again.close()
    # A sequence this node never issued (another node's, a restarted node's) gets a reset.
    foreign = await client.get("/v1/watch", params={"prefix": "api.", "since": "1000000"})
    name, _, data = await _next_event(foreign.content)
    assert name == "reset"
    snapshot = data["snapshot"]
    assert isinstance(snapshot, list)
    assert [(c["key"], c["value"]) for c in snapshot] == [("api.hits", 5.0)]
    foreign.close()


def test_server_sent_events_stream_changes_and_resume_from_last_event_id() -> None:
    run(_sse)


async def _long_poll(client: TestClient) -> None:  # type: ignore[type-arg]
    url = "/v1/keys/api.hits"
    idle = await client.get(url, params={"index": "0", "wait": "200ms"})
    assert (await idle.json()) == {"key": "api.hits", "index": 0, "reset": False, "changes": []}
    waiting = asyncio.create_task(client.get(url, params={"index": "0", "wait": "20s"}))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # blocked until the key changes
    await _write(client, "api.hits", 4)
    answer = await (await asyncio.wait_for(waiting, 10)).json()
    assert [change["value"] for change in answer["changes"]] == [4.0]
    index = answer["index"]
    # Asking from the returned index waits for the next change only.
    await _write(client, "api.other", 1)
    await _write(client, "api.hits", 1)
    later = await (await client.get(url, params={"index": str(index), "wait": "10s"})).json()
    assert [change["value"] for change in later["changes"]] == [5.0]
    assert later["index"] > index
    bad = await client.get(url, params={"index": "x"})
    assert bad.status == 400


def test_a_long_poll_waits_for_the_next_change_after_its_index() -> None:
    run(_long_poll)


def test_wait_durations_and_glob_escaping() -> None:
    assert [parse_wait(text) for text in ("30s", "500ms", "2m", "1.5", None)] == [
        30_000,
        500,
        120_000,
        1_500,
        30_000,
    ]
    assert parse_wait("10m") == 300_000  # capped
    with pytest.raises(InputError):
        parse_wait("soon")
    assert escape_glob("a*b?[c]") == "a[*]b[?][[]c]"
