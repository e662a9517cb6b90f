"""Synchronous calls of a node's engine for step-by-step simulations (no event loop): a write
or read whose ticket completes at once, and the same ticket for the ones that wait."""

from __future__ import annotations

from crdtstream.engine import Answer
from crdtstream.node import Node
from crdtstream.window.results import WindowValue

OP_OF_KIND = {
    "counter": "add",
    "gauge": "set",
    "distribution": "observe",
    "max": "observe",
    "min": "observe",
    "set": "insert",
    "distinct": "insert",
}
"""The write operation of each kind."""


def write(node: Node, key: str, op: str, value: float | int | str, **options: object) -> Answer:
    """A write that completes at once (an eventual key), at the node's clock reading as
    :meth:`Node.write` makes it: its answer, or its error raised. A node that logs writes
    answers once they are durable: it syncs its log here, as its driver does at the end of the
    event-loop turn that made the write."""
    options.setdefault("now_ms", node.clock.now_ms())
    ticket = node.engine.write(key, op, value, **options)  # type: ignore[arg-type]
    if not ticket.done:
        node.make_durable()
    return ticket.result()


def windows(node: Node, key: str, consistency: str = "eventual") -> tuple[WindowValue, ...]:
    """``key``'s windows as this node holds them (an eventual read)."""
    return node.engine.read(key, consistency=consistency).result().windows
