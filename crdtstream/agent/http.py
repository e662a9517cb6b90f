"""The agent's HTTP JSON API (aiohttp is imported here and nowhere else).

Routes (DESIGN.md §4): ``GET /v1/keys/{key}``, ``POST /v1/keys/{key}``, ``POST /v1/ingest``,
``GET /v1/status``. Bad input answers 400 with ``{"error": ...}``; nothing else is affected.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from crdtstream.engine import Answer
from crdtstream.errors import (
    CrdtStreamError,
    InvalidValueError,
    KindConflictError,
    RefusedError,
    UnavailableError,
)
from crdtstream.node import Node

__all__ = ["build_app", "json_value"]

REQUEST_ERRORS = (InvalidValueError, KindConflictError, RefusedError, UnavailableError)
"""The typed errors a write or read fails with; each maps to one HTTP status."""

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


def _answer_json(answer: Answer) -> dict[str, Any]:
    """What every answer says: the key, its kind and mode, and the consistency served."""
    return {
        "key": answer.key,
        "kind": answer.kind,
        "mode": answer.mode,
        "consistency": answer.consistency,
    }


def _failure(error: CrdtStreamError) -> web.Response:
    """A typed request error as its HTTP status: 503 when no majority answered in time, 409
    for a key of another kind, 400 for the rest (bad values, requests the mode refuses)."""
    if isinstance(error, UnavailableError):
        return _error(503, str(error))
    if isinstance(error, KindConflictError):
        return _error(409, str(error))
    return _error(400, str(error))


def build_app(node: Node) -> web.Application:
    """The aiohttp application serving ``node``."""
    routes = web.RouteTableDef()

    @routes.get("/v1/keys/{key}")
    async def read_key(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        try:
            answer = await node.read(key, consistency=request.query.get("consistency"))
        except REQUEST_ERRORS as error:
            return _failure(error)
        if answer.kind is None:
            return _error(404, f"unknown key {key!r}")
        windows = [_window(w.start_ms, w.end_ms, w.value, w.final) for w in answer.windows]
        return web.json_response({**_answer_json(answer), "windows": windows})

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
        kind, limit = body.get("kind"), body.get("limit")
        if kind is not None and not isinstance(kind, str):
            return _error(400, f"kind must be a string, got {kind!r}")
        try:
            answer = await node.write(
                key,
                op,
                value,
                kind=kind,
                timestamp_ms=body.get("timestamp_ms"),
                idempotency_key=request.headers.get("Idempotency-Key"),
                limit=limit,
            )
        except REQUEST_ERRORS as error:
            return _failure(error)
        written = _answer_json(answer)
        if answer.removed is not None:
            written["removed"] = answer.removed
        elif answer.applied is not None:
            written["applied"] = answer.applied
            written["value"] = json_value(answer.value)
        else:
            written["accepted"] = answer.accepted
        return web.json_response(written)

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
