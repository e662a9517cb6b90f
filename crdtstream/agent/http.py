"""The agent's HTTP JSON API (aiohttp is imported here and nowhere else).

Routes (DESIGN.md §4): ``GET /v1/keys`` (listing), ``GET /v1/keys/{key}`` (a long poll with
``?index=N&wait=30s``), ``POST /v1/keys/{key}``, ``POST /v1/ingest``, ``GET /v1/status``,
``GET /metrics``, ``POST /v1/members/{id}/remove``, ``POST /v1/members/{id}/retire-bounded``
(the strong decision that retires a removed member's bounded rows), ``GET /v1/watch?prefix=``
(Server-Sent Events; :mod:`.watching`). What a
request may carry is checked in :mod:`crdtstream.agent.http_input` before anything is written;
a refusal answers 4xx with ``{"error": ..., "reason": ...}`` and is counted by reason. An
exception escaping a handler is a bug: it is logged with its traceback, counted, and answered
500 without details.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from crdtstream.agent.aggregates import (
    DEFAULT_IDLE_TTL_MS,
    RESERVED_PREFIX,
    RunningAggregates,
    node_window_source,
)
from crdtstream.agent.http_input import (
    OPERATIONS,
    HttpStats,
    InputError,
    parse_key,
    parse_list_query,
    parse_write_body,
)
from crdtstream.agent.mapping import Mapper
from crdtstream.agent.metrics import (
    MetricsExporter,
    counter_families,
    http_families,
    node_self_metrics,
)
from crdtstream.agent.watching import (
    NodeWatch,
    change_json,
    escape_glob,
    parse_since,
    parse_wait,
    sse_frame,
)
from crdtstream.config import MODES
from crdtstream.engine import Answer
from crdtstream.engine.strong import StrongReplica
from crdtstream.errors import (
    InvalidValueError,
    KindConflictError,
    RefusedError,
    UnavailableError,
)
from crdtstream.node import Node
from crdtstream.watch import Change, Reset

__all__ = ["OP_KINDS", "build_app", "json_value"]

logger = logging.getLogger("crdtstream.http")

OP_KINDS = {op: kinds[0] for op, kinds in OPERATIONS.items()}
"""The kind a new key gets from the first operation written to it over HTTP."""

MAX_BODY_BYTES = 1 << 20
QUANTILES = (0.5, 0.9, 0.99)


def json_value(value: object) -> Any:
    """A window value as JSON: numbers as numbers, sets as sorted lists, sketches summarised."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (set, frozenset)):
        return sorted(json_value(item) for item in value)
    quantile = getattr(value, "quantile", None)
    if callable(quantile):
        summary = {
            "count": float(getattr(value, "count", 0.0)),
            "sum": float(getattr(value, "total", 0.0)),
            "min": float(getattr(value, "minimum", 0.0)),
            "max": float(getattr(value, "maximum", 0.0)),
        }
        if summary["count"] > 0:
            for q in QUANTILES:
                summary[f"p{round(q * 100)}"] = float(quantile(q))
        return summary
    return float(value)  # type: ignore[arg-type]


def _error(status: int, message: str, reason: str = "unavailable") -> web.Response:
    return web.json_response({"error": message, "reason": reason}, status=status)


def _window(start_ms: int, end_ms: int, value: object, final: bool) -> dict[str, Any]:
    return {"start_ms": start_ms, "end_ms": end_ms, "value": json_value(value), "final": final}


def _answer_json(answer: Answer) -> dict[str, Any]:
    """What every answer says: the key, its kind, the key's mode and the consistency served
    (weaker than the mode when the caller asked for a weaker read)."""
    return {
        "key": answer.key,
        "kind": answer.kind,
        "mode": answer.mode,
        "consistency": answer.consistency,
    }


async def _settled(request: Awaitable[Answer]) -> Answer:
    """The engine's answer, or its typed error as a counted refusal; an unavailable majority
    propagates (a 503, not a client error)."""
    try:
        return await request
    except KindConflictError as error:
        raise InputError(409, "kind_conflict", str(error)) from None
    except RefusedError as error:
        raise InputError(400, "refused", str(error)) from None
    except InvalidValueError as error:
        raise InputError(400, "invalid_value", str(error)) from None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_AIOHTTP_REASONS = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def _counting_middleware(stats: HttpStats) -> Any:
    """Counts every answer by route and status, turns :class:`InputError` into its 4xx answer,
    and a handler's unexpected exception into a logged, counted 500."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        try:
            if request.can_read_body:
                # Read (and decoded) here, for every route: a body that cannot be decoded is the
                # client's 400, never a dropped connection after the handler answered.
                try:
                    await request.read()
                except web.RequestPayloadError as error:
                    raise InputError(400, "bad_payload", str(error)) from None
            response = await handler(request)
        except InputError as error:
            stats.count_refusal(error.reason)
            response = _error(error.status, str(error), error.reason)
        except web.HTTPException as error:
            if 400 <= error.status < 500:
                stats.count_refusal(_AIOHTTP_REASONS.get(error.status, f"http_{error.status}"))
            stats.count_request(route, request.method, error.status)
            raise
        except Exception:
            # A bug: no request input may cause this. Logged with its traceback and counted.
            logger.exception("internal error serving %s %s", request.method, route)
            stats.internal_errors += 1
            response = _error(500, "internal error (logged)", "internal_error")
        stats.count_request(route, request.method, response.status)
        return response

    return middleware


def _consistency_of(request: web.Request, key_mode: str) -> str:
    consistency = request.query.get("consistency", key_mode)
    if consistency not in MODES:
        raise InputError(400, "unknown_consistency", f"unknown consistency {consistency!r}")
    return consistency


def _list_keys(node: Node, request: web.Request) -> dict[str, Any]:
    query = parse_list_query(request.query)
    kinds = dict(node.engine.catalog.keys())
    strong = node.engine.strong
    if isinstance(strong, StrongReplica):
        for key in strong.machine.key_names():
            view = strong.machine.read(key)
            if view is not None:
                kinds.setdefault(key, view.kind)
    names = sorted(
        k
        for k in kinds
        if k.startswith(query.prefix) and k > query.after and not k.startswith(RESERVED_PREFIX)
    )
    page = names[: query.limit]
    return {
        "keys": [{"key": k, "kind": kinds[k], "mode": node.engine.mode_of(k)} for k in page],
        "next_after": page[-1] if len(names) > query.limit else None,
    }


def build_app(
    node: Node,
    exporter: MetricsExporter | None = None,
    *,
    counters: Mapping[str, Callable[[], Mapping[str, int]]] | None = None,
    mapper: Mapper | None = None,
    idle_ttl_ms: int = DEFAULT_IDLE_TTL_MS,
    status_sections: Mapping[str, Callable[[], object]] | None = None,
) -> web.Application:
    """The aiohttp application serving ``node``; ``exporter`` serves ``/metrics`` (one over
    the node is made when not given); ``counters`` adds the agent's own counter groups to it
    (``{"raft": ...}`` gives ``crdtstream_raft_<name>_total``); ``mapper`` and ``idle_ttl_ms``
    shape the exporter made here (statsd_exporter mapping rules; when idle keys drop out);
    ``status_sections`` adds named sections to ``GET /v1/status`` (the agent's inputs report
    their counters there)."""
    sections = dict(status_sections or {})
    routes = web.RouteTableDef()
    stats = HttpStats()
    if exporter is None:
        exporter = MetricsExporter(
            node_self_metrics(node),
            RunningAggregates(node_window_source(node), idle_ttl_ms),
            node.clock.now_ms,
            mapper,
        )
    exporter.self_metrics.extra.append(lambda: http_families(stats))
    for group, values in (counters or {}).items():
        exporter.self_metrics.extra.append(counter_families(group, values))

    watch = NodeWatch(node)

    @routes.get("/v1/keys/{key}")
    async def read_key(request: web.Request) -> web.Response:
        key = parse_key(request.match_info["key"])
        if "index" in request.query:
            return await _long_poll(watch, key, request)
        consistency = _consistency_of(request, node.engine.mode_of(key))
        try:
            answer = await _settled(node.read(key, consistency=consistency))
        except UnavailableError as error:
            return _error(503, str(error))
        if answer.kind is None:
            raise InputError(404, "unknown_key", f"unknown key {key!r}")
        windows = [_window(w.start_ms, w.end_ms, w.value, w.final) for w in answer.windows]
        read = {**_answer_json(answer), "windows": windows}
        if answer.mode == "bounded" and isinstance(answer.value, dict):
            read.update(answer.value)  # the open window's value, limit and this node's rights
        return web.json_response(read)

    @routes.post("/v1/keys/{key}")
    async def write_key(request: web.Request) -> web.Response:
        key = parse_key(request.match_info["key"])
        if key.startswith(RESERVED_PREFIX):
            raise InputError(403, "reserved_key", f"keys under {RESERVED_PREFIX!r} are the agent's")
        body = parse_write_body(await request.read(), node.engine.store.kind_of(key))
        try:
            answer = await _settled(
                node.write(
                    key,
                    body.op,
                    body.value,
                    kind=body.kind,
                    timestamp_ms=body.timestamp_ms,
                    idempotency_key=request.headers.get("Idempotency-Key"),
                    limit=body.limit,
                )
            )
        except UnavailableError as error:
            # An eventual or quorum write stays applied here and still spreads by gossip; only
            # the majority was not confirmed. A strong write's outcome is unknown.
            return _error(503, str(error))
        written = _answer_json(answer)
        if answer.removed is not None:
            written["removed"] = answer.removed
        elif answer.applied is not None:
            written["applied"] = answer.applied
            written["value"] = json_value(answer.value)
        else:
            written["accepted"] = answer.accepted
        return web.json_response(written)

    @routes.get("/v1/keys")
    async def list_keys(request: web.Request) -> web.Response:
        return web.json_response(_list_keys(node, request))

    @routes.post("/v1/members/{node_id}/remove")
    async def remove_member(request: web.Request) -> web.Response:
        node_id = request.match_info["node_id"]
        force = request.query.get("force", "0")
        if force not in ("0", "1"):
            raise InputError(400, "bad_parameter", "force must be 0 or 1")
        try:
            removed = node.engine.remove_member(node_id, force=force == "1")
        except RefusedError as error:
            raise InputError(409, "member_not_removable", str(error)) from None
        return web.json_response({"member": node_id, "removed": removed})

    @routes.post("/v1/members/{node_id}/retire-bounded")
    async def retire_bounded(request: web.Request) -> web.Response:
        node_id = request.match_info["node_id"]
        try:
            answer = await node.retire_bounded_member(node_id)
        except RefusedError as error:
            raise InputError(409, "member_not_retirable", str(error)) from None
        except UnavailableError as error:
            return _error(503, str(error))
        return web.json_response({"member": node_id, "rows_retired": answer.value})

    @routes.post("/v1/ingest")
    async def ingest(request: web.Request) -> web.Response:
        data = await request.read()
        return web.json_response(node.ingest_statsd(data))

    @routes.get("/v1/status")
    async def status(request: web.Request) -> web.Response:
        answer = node.status()
        answer.update({name: section() for name, section in sections.items()})
        return web.json_response(answer)

    @routes.get("/metrics")
    async def metrics(request: web.Request) -> web.Response:
        provisional = request.query.get("provisional", "0")
        if provisional not in ("0", "1"):
            raise InputError(400, "bad_parameter", "provisional must be 0 or 1")
        body, content_type = exporter.exposition(
            request.headers.get("Accept", ""), provisional=provisional == "1"
        )
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    @routes.get("/v1/watch")
    async def watch_keys(request: web.Request) -> web.StreamResponse:
        return await _stream_watch(watch, request)

    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_counting_middleware(stats)])
    app.add_routes(routes)
    app.on_shutdown.append(lambda _: watch.close())  # streams end before handlers are awaited
    app.cleanup_ctx.append(_folding(exporter, node.config.window.size_ms))
    return app


async def _long_poll(watch: NodeWatch, key: str, request: web.Request) -> web.Response:
    """``GET /v1/keys/{key}?index=N&wait=30s``: the key's changes after sequence N, waiting
    for the first (see :mod:`crdtstream.agent.watching`)."""
    index = parse_since(request.query.get("index"), "index") or 0
    wait_ms = parse_wait(request.query.get("wait"))
    next_index, events = await watch.long_poll(key, index, wait_ms)
    changes: list[dict[str, Any]] = []
    reset = False
    for event in events:
        if isinstance(event, Reset):
            reset, changes = True, [change_json(c, json_value) for c in event.snapshot]
        elif isinstance(event, Change):
            changes.append(change_json(event, json_value))
    body = {"key": key, "index": next_index, "reset": reset, "changes": changes}
    response = web.json_response(body)
    response.headers["X-Crdtstream-Index"] = str(next_index)
    return response


async def _stream_watch(watch: NodeWatch, request: web.Request) -> web.StreamResponse:
    """``GET /v1/watch?prefix=P``: changes as Server-Sent Events, resumable with ``since`` or
    the ``Last-Event-ID`` header (see :mod:`crdtstream.agent.watching`)."""
    prefix = request.query.get("prefix", "")
    since = parse_since(request.query.get("since"), "since")
    if since is None:
        since = parse_since(request.headers.get("Last-Event-ID"), "last_event_id")
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    events = watch.events(escape_glob(prefix) + "*", since)
    # aclosing: a client that went away ends its subscription now, not when collected.
    async with contextlib.aclosing(events):
        with contextlib.suppress(ConnectionResetError):
            async for event in events:
                await response.write(sse_frame(event, json_value))
    return response


def _folding(exporter: MetricsExporter, size_ms: int) -> Any:
    """Folds newly final windows twice a window between scrapes, so a window cannot expire
    from the store before the running values took it, however rarely ``/metrics`` is read."""

    async def fold_while_serving(app: web.Application) -> AsyncIterator[None]:
        async def fold_forever() -> None:
            while True:
                await asyncio.sleep(size_ms / 2_000)
                exporter.aggregates.fold(exporter.now_ms())

        task = asyncio.create_task(fold_forever())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return fold_while_serving
