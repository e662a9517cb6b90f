"""Run one agent: a node over ZeroMQ, a statsd input and the HTTP API, until a signal.

The statsd input (:mod:`crdtstream.agent.statsd_input`) reads in a thread of its own and hands
the node whole batches of datagrams, so a burst costs a few parses, not one per datagram.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import Iterator

from aiohttp import web

from crdtstream.agent.events import ClusterObserver, log_event, log_start
from crdtstream.agent.export import ClusterExporter
from crdtstream.agent.http import build_app
from crdtstream.agent.settings import AgentSettings
from crdtstream.agent.sinks import GraphiteSink
from crdtstream.agent.statsd_input import StatsdInput
from crdtstream.clock import SystemClock
from crdtstream.errors import ConfigError, TransportError
from crdtstream.node import Node
from transports.zeromq import ZmqTransport

__all__ = ["FINAL_PUSH_TIMEOUT_S", "push_final_deltas", "run_agent"]

OBSERVE_INTERVAL_S = 0.25
"""How often membership, leadership and refused peers are compared for the log."""
EXPORT_BACKOFF_S_MAX = 30.0
FINAL_PUSH_TIMEOUT_S = 3.0
"""How long a stopping agent waits for its gossip neighbours to acknowledge its last changes."""


async def push_final_deltas(node: Node, timeout_s: float = FINAL_PUSH_TIMEOUT_S) -> bool:
    """Keep the node pumping until every live gossip neighbour acknowledged every local change,
    or ``timeout_s`` passed; True when they all did. The node's own loop keeps running
    meanwhile, and its next gossip rounds carry the changes."""
    deadline = time.monotonic() + timeout_s
    # The node takes its local changes into the gossip buffer on its next tick.
    await asyncio.sleep(2 * node.config.tick_interval_ms / 1_000)
    while node.engine.peers_behind():
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
    with _naming("--listen", config.listen_address):
        transport = ZmqTransport(config.node_id, config.listen_address, config.transport)
    node = Node(config, transport, SystemClock(), random.Random())
    shutdown = asyncio.Event()
    node_stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, shutdown.set)
    node_task = asyncio.create_task(node.run(node_stop))
    observer = ClusterObserver(node)
    observer_task = asyncio.create_task(_observe(observer))
    exporter: ClusterExporter | None = None
    background = [observer_task]
    if settings.graphite is not None:
        exporter = ClusterExporter(node, GraphiteSink(*settings.graphite))
        background.append(asyncio.create_task(_export(exporter, settings.graphite)))
    runner: web.AppRunner | None = None
    statsd: StatsdInput | None = None
    started = False
    try:
        if settings.statsd is not None:
            statsd = StatsdInput(node, settings.statsd)
            with _naming("--statsd", settings.statsd.address):
                await statsd.start()
            granted, asked = (
                statsd.receive_buffer_bytes_granted,
                settings.statsd.receive_buffer_bytes,
            )
            log_event(
                logging.INFO,
                "statsd listening",
                statsd=settings.statsd.address,
                receive_buffer_bytes_granted=granted,
                receive_buffer_bytes_asked=asked,
            )
            if 0 < granted < asked:
                log_event(
                    logging.WARNING,
                    "statsd receive buffer capped: bursts may be dropped by the kernel "
                    "(counted in kernel_drops); raise net.core.rmem_max",
                    receive_buffer_bytes_granted=granted,
                    receive_buffer_bytes_asked=asked,
                )
        if settings.http is not None:
            counters = {"raft": observer.counters}
            if exporter is not None:
                counters["export"] = exporter.all_counters
            if statsd is not None:
                counters["statsd"] = statsd.counters
            app = build_app(
                node,
                counters=counters,
                mapper=settings.mapping,
                idle_ttl_ms=settings.metrics_idle_ttl_ms,
                status_sections={} if statsd is None else {"statsd": statsd.status},
            )
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=10.0)
            await runner.setup()
            with _naming("--http", settings.http):
                await web.TCPSite(runner, settings.http[0], settings.http[1]).start()
        statsd_address = None if settings.statsd is None else settings.statsd.address
        log_start(node, statsd=statsd_address, http=settings.http, graphite=settings.graphite)
        started = True
        if ready is not None:
            ready.set()
        waiter = asyncio.create_task(shutdown.wait())
        await asyncio.wait([waiter, node_task], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    finally:
        if started:  # a start-up failure is the command line's one line, nothing more
            log_event(logging.INFO, "agent stopping", node_id=config.node_id)
        for task in background:
            task.cancel()
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
            log_event(
                logging.ERROR, "node loop failed", error=f"{type(failure).__name__}: {failure}"
            )
            raise failure  # the node loop died: the agent exits non-zero with the cause
    log_event(logging.INFO, "agent stopped", node_id=config.node_id)


async def _export(exporter: ClusterExporter, address: tuple[str, int]) -> None:
    """Collect and flush final windows twice a window; back off while the backend is down."""
    interval_s = exporter.size_ms / 2_000
    delay_s = interval_s
    while True:
        exporter.collect(exporter.node.clock.now_ms())
        if await exporter.flush():
            if delay_s > interval_s:
                log_event(logging.INFO, "graphite reachable again", graphite=address)
            delay_s = interval_s
        else:
            if delay_s == interval_s:
                log_event(logging.WARNING, "graphite unreachable; retrying", graphite=address)
            delay_s = min(EXPORT_BACKOFF_S_MAX, delay_s * 2)
        await asyncio.sleep(delay_s)


async def _observe(observer: ClusterObserver) -> None:
    while True:
        observer.observe()
        await asyncio.sleep(OBSERVE_INTERVAL_S)


@contextlib.contextmanager
def _naming(flag: str, address: object) -> Iterator[None]:
    """Turn a failure to bind or resolve ``address`` into a :class:`ConfigError` naming the
    flag that gave it, so the agent exits 2 with one line an operator can act on."""
    try:
        yield
    except (OSError, TransportError) as error:
        if isinstance(address, tuple):
            address = ":".join(str(part) for part in address)
        detail = str(error)
        if isinstance(error, OSError) and error.errno is not None and error.errno > 0:
            detail = os.strerror(error.errno).lower()  # asyncio wraps it in a longer message
        elif isinstance(error, OSError) and error.strerror:
            detail = error.strerror  # a resolver error (its errno is negative)
        raise ConfigError(f"{flag} {address}: {detail}") from error
