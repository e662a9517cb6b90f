"""Run one agent: a node over ZeroMQ, a statsd input and the HTTP API, until a signal.

The statsd input (:mod:`crdtstream.agent.statsd_input`) reads in a thread of its own and hands
the node whole batches of datagrams, so a burst costs a few parses, not one per datagram.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time

from aiohttp import web

from crdtstream.agent.http import build_app
from crdtstream.agent.settings import AgentSettings
from crdtstream.agent.statsd_input import StatsdInput
from crdtstream.clock import SystemClock
from crdtstream.node import Node
from transports.zeromq import ZmqTransport

__all__ = ["FINAL_PUSH_TIMEOUT_S", "push_final_deltas", "run_agent"]

_log = logging.getLogger(__name__)

FINAL_PUSH_TIMEOUT_S = 3.0
"""How long a stopping agent waits for its gossip neighbours to acknowledge its last changes."""


async def push_final_deltas(node: Node, timeout_s: float = FINAL_PUSH_TIMEOUT_S) -> bool:
    """Keep the node pumping until every live gossip neighbour acknowledged every local change,
    or ``timeout_s`` passed; True when they all did. The node's own loop keeps running
    meanwhile, and its next gossip rounds carry the changes."""
    deadline = time.monotonic() + timeout_s
    # The node takes its local changes into the gossip buffer on its next tick.
    await asyncio.sleep(2 * node.config.tick_interval_ms / 1_000)
    while node.peers_behind():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(node.config.tick_interval_ms / 1_000)
    return True


async def run_agent(settings: AgentSettings, *, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGINT/SIGTERM (or cancellation), then shut down in order.

    The inputs stop first while the node still runs: the statsd reader stops, drains what the
    kernel still holds and everything queued is applied; the HTTP server stops, so requests in
    flight finish or reach their deadlines and nothing is accepted after the final snapshot.
    Then the last changes are pushed to the gossip neighbours (bounded by
    :data:`FINAL_PUSH_TIMEOUT_S`), and the node leaves, snapshots and closes.
    """
    config = settings.node
    transport = ZmqTransport(config.node_id, config.listen_address, config.transport)
    node = Node(config, transport, SystemClock(), random.Random())
    shutdown = asyncio.Event()
    node_stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, shutdown.set)
    node_task = asyncio.create_task(node.run(node_stop))
    runner: web.AppRunner | None = None
    statsd: StatsdInput | None = None
    try:
        if settings.statsd is not None:
            statsd = StatsdInput(node, settings.statsd)
            await statsd.start()
            granted, asked = (
                statsd.receive_buffer_bytes_granted,
                settings.statsd.receive_buffer_bytes,
            )
            _log.info(
                "statsd on %s, receive buffer %d bytes granted (%d asked)",
                settings.statsd.address,
                granted,
                asked,
            )
            if 0 < granted < asked:
                _log.warning(
                    "statsd receive buffer capped at %d bytes (%d asked): bursts may be "
                    "dropped by the kernel (counted in kernel_drops); raise "
                    "net.core.rmem_max",
                    granted,
                    asked,
                )
        if settings.http is not None:
            sections = {} if statsd is None else {"statsd": statsd.status}
            app = build_app(node, status_sections=sections)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=10.0)
            await runner.setup()
            await web.TCPSite(runner, settings.http[0], settings.http[1]).start()
        if ready is not None:
            ready.set()
        waiter = asyncio.create_task(shutdown.wait())
        await asyncio.wait([waiter, node_task], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    finally:
        if statsd is not None:
            await statsd.stop()
        if runner is not None:
            await runner.cleanup()
        if not node_task.done():
            await push_final_deltas(node)
        node_stop.set()
        await asyncio.gather(node_task, return_exceptions=True)
        node.close()
    if node_task.done() and not node_task.cancelled():
        failure = node_task.exception()
        if failure is not None:
            raise failure  # the node loop died: the agent exits non-zero with the cause
