"""Watch over HTTP: the node's change feed for Server-Sent Events and long polls.

``GET /v1/watch?prefix=P[&since=S]`` streams events (``text/event-stream``): ``event: change``
(data: the change), ``event: reset`` (data: ``{"sequence", "snapshot": [changes]}``) and
``event: progress`` (bookmarks, which also keep idle connections alive). Every event's ``id`` is
a sequence, so a client that reconnects with ``Last-Event-ID`` resumes after it, exactly (or is
reset). ``GET /v1/keys/{key}?index=N&wait=30s`` is a blocking read (after etcd v2 and Consul):
it answers as soon as ``key`` changed after sequence ``N`` (at once if it has), or after
``wait`` with no change; the answer's ``index`` is what to pass next. Semantics of the events:
:mod:`crdtstream.watch`.

aiohttp is not imported here: the route functions in :mod:`crdtstream.agent.http` use this.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncGenerator, Callable
from typing import Any

from crdtstream.agent.http_input import InputError
from crdtstream.node import Node
from crdtstream.replica import EngineSource
from crdtstream.watch import Change, ChangeFeed, Progress, Reset, Subscriber, WatchEvent

__all__ = ["NodeWatch", "escape_glob", "parse_since", "parse_wait", "sse_frame"]

WAIT_MS_MAX = 300_000
"""The longest a long poll may wait (a proxy between would cut a longer request anyway)."""
WAIT_MS_DEFAULT = 30_000
WATCH_INTERVAL_MS = 100
PROGRESS_INTERVAL_MS = 5_000
"""Bookmarks on idle streams, often enough to keep proxies from closing them."""

_WAIT = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, None: 1_000}


def parse_wait(text: str | None) -> int:
    """``30s``, ``500ms``, ``2m`` or bare seconds, as milliseconds (at most :data:`WAIT_MS_MAX`)."""
    if text is None:
        return WAIT_MS_DEFAULT
    match = _WAIT.match(text.strip())
    if match is None:
        raise InputError(400, "bad_wait", f"wait must look like 30s, 500ms or 2m, got {text!r}")
    return min(WAIT_MS_MAX, int(float(match.group(1)) * _UNIT_MS[match.group(2)]))


def parse_since(text: str | None, name: str) -> int | None:
    """A sequence from a query parameter or header (None when absent)."""
    if text is None or text == "":
        return None
    if not text.isdigit():
        raise InputError(400, f"bad_{name}", f"{name} must be a sequence >= 0, got {text!r}")
    return int(text)


def escape_glob(text: str) -> str:
    """``text`` as a glob matching itself only."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def change_json(change: Change, value_json: Callable[[object], Any]) -> dict[str, Any]:
    """A change as JSON data (values through ``value_json``)."""
    return {**change.as_dict(), "value": value_json(change.value)}


def sse_frame(event: WatchEvent, value_json: Callable[[object], Any]) -> bytes:
    """One Server-Sent Event: its name, its sequence as ``id``, its data as one JSON line."""
    data: dict[str, Any]
    if isinstance(event, Change):
        name, data = "change", change_json(event, value_json)
    elif isinstance(event, Reset):
        snapshot = [change_json(c, value_json) for c in event.snapshot]
        name, data = "reset", {"sequence": event.sequence, "snapshot": snapshot}
    else:
        name, data = "progress", {"sequence": event.sequence, "raft_index": event.raft_index}
    line = json.dumps(data, separators=(",", ":"))
    return f"event: {name}\nid: {event.sequence}\ndata: {line}\n\n".encode()


class NodeWatch:
    """The node's change feed and the task that polls it, started on the first watch."""

    def __init__(self, node: Node, interval_ms: int = WATCH_INTERVAL_MS) -> None:
        self.node = node
        self.interval_ms = interval_ms
        self._feed: ChangeFeed | None = None
        self._task: asyncio.Task[None] | None = None

    def feed(self) -> ChangeFeed:
        """The feed (started now if it was not)."""
        if self._feed is None:
            self._feed = ChangeFeed(
                EngineSource(self.node.engine), progress_interval_ms=PROGRESS_INTERVAL_MS
            )
            self._task = asyncio.create_task(self._poll(self._feed))
        return self._feed

    async def _poll(self, feed: ChangeFeed) -> None:
        while True:
            feed.poll(self.node.clock.monotonic_ms())
            await asyncio.sleep(self.interval_ms / 1_000)

    async def close(self) -> None:
        """End every stream and stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._feed is not None:
            self._feed.close()

    async def events(self, pattern: str, since: int | None) -> AsyncGenerator[WatchEvent, None]:
        """The events of one watch until the feed closes (the subscription ends with the
        iteration, also when the client goes away)."""
        woken = asyncio.Event()
        feed = self.feed()
        subscriber = feed.subscribe(pattern, woken.set, since=since)
        try:
            while True:
                event = subscriber.pop()
                if event is not None:
                    yield event
                    continue
                if subscriber.closed:
                    return
                woken.clear()
                await woken.wait()
        finally:
            feed.unsubscribe(subscriber)

    async def long_poll(self, key: str, index: int, wait_ms: int) -> tuple[int, list[WatchEvent]]:
        """The changes and resets of ``key`` after sequence ``index``, waiting up to
        ``wait_ms`` for the first; returns the index to ask from next, and the events."""
        woken = asyncio.Event()
        feed = self.feed()
        subscriber = feed.subscribe(escape_glob(key), woken.set, since=index)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_ms / 1_000):
                    while not _has_news(subscriber):
                        woken.clear()
                        await woken.wait()
            events: list[WatchEvent] = [
                e for e in _drain(subscriber) if not isinstance(e, Progress)
            ]
        finally:
            feed.unsubscribe(subscriber)
        return max([index, *(e.sequence for e in events)]), events


def _has_news(subscriber: Subscriber) -> bool:
    return subscriber.closed or any(not isinstance(e, Progress) for e in subscriber.buffer)


def _drain(subscriber: Subscriber) -> list[WatchEvent]:
    events = list(subscriber.buffer)
    subscriber.buffer.clear()
    return events
