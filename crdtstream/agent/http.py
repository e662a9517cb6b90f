"""The agent's HTTP JSON API (aiohttp is imported here and nowhere else).

Routes (DESIGN.md §4): ``GET /v1/keys/{key}``, ``POST /v1/keys/{key}``, ``POST /v1/ingest``,
``GET /v1/status``. Bad input answers 400 with ``{"error": ...}``; nothing else is affected.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from crdtstream.node import Node

__all__ = ["OP_KINDS", "build_app", "json_value"]

OP_KINDS = {"add": "counter", "set": "gauge", "observe": "distribution", "insert": "set"}
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


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def build_app(node: Node) -> web.Application:
    """The aiohttp application serving ``node``."""
    routes = web.RouteTableDef()

    @routes.get("/v1/keys/{key}")
    async def read_key(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        kind = node.kind_of(key)
        if kind is None:
            return _error(404, f"unknown key {key!r}")
        windows = [
            {
                "start_ms": w.start_ms,
                "end_ms": w.end_ms,
                "value": json_value(w.value),
                "final": w.final,
            }
            for w in node.read_key(key)
        ]
        return web.json_response({"key": key, "kind": kind, "mode": "eventual", "windows": windows})

    @routes.post("/v1/keys/{key}")
    async def write_key(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        try:
            body = json.loads(await request.read())
            op, value = body["op"], body["value"]
        except (ValueError, KeyError, TypeError):
            return _error(400, 'body must be JSON {"op": ..., "value": ...}')
        kind = node.kind_of(key) or OP_KINDS.get(op)
        if kind is None:
            return _error(400, f"unknown op {op!r}; expected one of {sorted(OP_KINDS)}")
        try:
            if op == "remove":
                removed = node.remove(key, value)
                return web.json_response({"key": key, "removed": removed})
            result = node.add(key, kind, value)
        except (TypeError, ValueError) as error:
            return _error(400, str(error))
        if result.rejected:
            return _error(409, f"key {key!r} already has another kind")
        if result.invalid:
            return _error(400, f"invalid value {value!r} for a {kind}")
        return web.json_response({"key": key, "kind": kind, "accepted": result.accepted})

    @routes.post("/v1/ingest")
    async def ingest(request: web.Request) -> web.Response:
        data = await request.read()
        return web.json_response(node.ingest_statsd(data))

    @routes.get("/v1/status")
    async def status(request: web.Request) -> web.Response:
        return web.json_response(node.status())

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.add_routes(routes)
    return app
