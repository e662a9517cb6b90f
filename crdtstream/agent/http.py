"""The agent's HTTP JSON API (aiohttp is imported here and nowhere else).

Routes (DESIGN.md §4): ``GET /v1/keys/{key}``, ``POST /v1/keys/{key}``, ``POST /v1/ingest``,
``GET /v1/status``. Bad input answers 400 with ``{"error": ...}``; nothing else is affected.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from crdtstream.errors import ConfigError, KindConflictError, UnavailableError
from crdtstream.node import Node

__all__ = ["OP_KINDS", "build_app", "json_value"]

OP_KINDS = {
    "add": "counter",
    "set": "gauge",
    "observe": "distribution",
    "insert": "set",
    "remove": "set",
}
"""The kind a new key gets from the first operation written to it over HTTP."""

OP_ACCEPTING_KINDS = {
    "add": ("counter",),
    "set": ("gauge",),
    "observe": ("distribution", "max", "min"),
    "insert": ("set", "distinct"),
    "remove": ("set",),
}
"""The kinds each operation applies to; an operation on a key of another kind is a 409."""

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


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _window(start_ms: int, end_ms: int, value: object, final: bool) -> dict[str, Any]:
    return {"start_ms": start_ms, "end_ms": end_ms, "value": json_value(value), "final": final}


STRONG_OPERATIONS = {
    "add": ("counter", "add"),
    "conditional_add": ("counter", "conditional_add"),
    "set": ("gauge", "set"),
    "observe": ("distribution", "observe"),
    "insert": ("set", "add"),
    "remove": ("set", "remove"),
}
"""HTTP op -> (kind, state-machine operation) for strong keys; ``kind`` in the body overrides."""


async def _read_strong(node: Node, key: str) -> web.Response:
    try:
        view = await node.query_strong(key)
    except (UnavailableError, ConfigError) as error:  # no quorum, or no voters configured
        return _error(503, str(error))
    if view is None:
        return _error(404, f"unknown key {key!r}")
    # A linearizable read: the value is exact as of now; windows may still receive writes
    # until the replicated watermark passes them, which this read does not report.
    windows = [_window(start, end, value, False) for start, end, value in view.windows]
    return web.json_response({"key": key, "kind": view.kind, "mode": "strong", "windows": windows})


async def _write_strong(
    node: Node, key: str, body: dict[str, Any], idempotency_key: str | None
) -> web.Response:
    op = body["op"]
    if op not in STRONG_OPERATIONS:
        return _error(400, f"unknown op {op!r}; expected one of {sorted(STRONG_OPERATIONS)}")
    kind, operation = STRONG_OPERATIONS[op]
    kind = str(body.get("kind", kind))
    try:
        timestamp_ms = body.get("timestamp_ms")
        if timestamp_ms is not None and type(timestamp_ms) is not int:
            raise TypeError(f"timestamp_ms must be an integer, got {timestamp_ms!r}")
        command = node.new_command(
            key,
            kind,
            operation,
            body["value"],
            limit=body.get("limit"),
            timestamp_ms=timestamp_ms,
            idempotency_key=idempotency_key,
        )
    except (TypeError, ValueError) as error:
        return _error(400, str(error))
    try:
        result = await node.write_strong(command)
    except (UnavailableError, ConfigError) as error:  # no quorum, or no voters configured
        return _error(503, str(error))
    if not result.ok:
        return _error(400, result.error)
    return web.json_response(
        {
            "key": key,
            "kind": kind,
            "mode": "strong",
            "applied": result.applied,
            "value": json_value(result.value),
        }
    )


def build_app(
    node: Node, *, status_sections: Mapping[str, Callable[[], object]] | None = None
) -> web.Application:
    """The aiohttp application serving ``node``; ``status_sections`` adds named sections to
    ``GET /v1/status`` (the agent's inputs report their counters there)."""
    sections = dict(status_sections or {})
    routes = web.RouteTableDef()

    @routes.get("/v1/keys/{key}")
    async def read_key(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        mode = request.query.get("consistency", node.mode_of(key))
        if mode == "strong":
            return await _read_strong(node, key)
        if mode not in ("eventual", "quorum"):
            return _error(400, f"unknown consistency {mode!r}")
        if mode == "quorum":
            try:
                values = await node.query_quorum(key)
            except UnavailableError as error:
                return _error(503, str(error))
        else:
            values = node.read_key(key)
        kind = node.kind_of(key)
        if kind is None:
            return _error(404, f"unknown key {key!r}")
        windows = [_window(w.start_ms, w.end_ms, w.value, w.final) for w in values]
        return web.json_response({"key": key, "kind": kind, "mode": mode, "windows": windows})

    @routes.post("/v1/keys/{key}")
    async def write_key(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        try:
            body = json.loads(await request.read())
            op, value = body["op"], body["value"]
            if not isinstance(op, str):
                raise TypeError("op must be a string")
        except (ValueError, KeyError, TypeError):
            return _error(400, 'body must be JSON {"op": "<operation>", "value": ...}')
        mode = node.mode_of(key)
        if mode == "strong":
            return await _write_strong(node, key, body, request.headers.get("Idempotency-Key"))
        if op not in OP_ACCEPTING_KINDS:
            return _error(400, f"unknown op {op!r}; expected one of {sorted(OP_ACCEPTING_KINDS)}")
        kind = node.kind_of(key) or OP_KINDS[op]
        if kind not in OP_ACCEPTING_KINDS[op]:
            return _error(
                409, f"key {key!r} is a {kind}; {op!r} applies to {OP_ACCEPTING_KINDS[op]}"
            )
        quorum = mode == "quorum"
        try:
            if op == "remove":
                removed = (
                    await node.delete_quorum(key, value) if quorum else node.remove(key, value)
                )
                return web.json_response({"key": key, "mode": mode, "removed": removed})
            result = (
                await node.write_quorum(key, kind, value) if quorum else node.add(key, kind, value)
            )
        except (TypeError, ValueError, OverflowError, KindConflictError) as error:
            return _error(400, str(error))
        except UnavailableError as error:
            # Applied here and still spread by gossip; only the majority was not confirmed.
            return _error(503, f"{error}; the write was kept on this node")
        if result.rejected:
            return _error(409, f"key {key!r} already has another kind")
        if result.invalid:
            return _error(400, f"invalid value {value!r} for a {kind}")
        return web.json_response(
            {"key": key, "kind": kind, "mode": mode, "accepted": result.accepted}
        )

    @routes.post("/v1/ingest")
    async def ingest(request: web.Request) -> web.Response:
        data = await request.read()
        return web.json_response(node.ingest_statsd(data))

    @routes.get("/v1/status")
    async def status(request: web.Request) -> web.Response:
        answer = node.status()
        answer.update({name: section() for name, section in sections.items()})
        return web.json_response(answer)

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.add_routes(routes)
    return app
