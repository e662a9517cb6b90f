"""Run one agent: a node over ZeroMQ, a statsd UDP listener and the HTTP API, until a signal.

The statsd listener batches what arrives between two loop iterations and hands the whole batch
to the vectorised parser, so a burst of datagrams costs one parse, not one per datagram.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
from collections.abc import Iterator

from aiohttp import web

from crdtstream.agent.events import ClusterObserver, log_event, log_start
from crdtstream.agent.export import ClusterExporter
from crdtstream.agent.http import build_app
from crdtstream.agent.settings import AgentSettings
from crdtstream.agent.sinks import GraphiteSink
from crdtstream.clock import SystemClock
from crdtstream.errors import ConfigError, TransportError
from crdtstream.node import Node
from transports.zeromq import ZmqTransport

__all__ = ["StatsdProtocol", "run_agent"]

STATSD_BATCH_DATAGRAMS = 4_096
OBSERVE_INTERVAL_S = 0.25
"""How often membership, leadership and refused peers are compared for the log."""
EXPORT_BACKOFF_S_MAX = 30.0


class StatsdProtocol(asyncio.DatagramProtocol):
    """Collects datagrams and feeds them to the node in batches."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.pending: list[bytes] = []
        self._scheduled = False

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        """Queue one datagram; the batch is parsed on the next loop iteration."""
        self.pending.append(data)
        if len(self.pending) >= STATSD_BATCH_DATAGRAMS:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Parse and apply everything queued."""
        self._scheduled = False
        batch, self.pending = self.pending, []
        if batch:
            self.node.ingest_statsd(batch)


async def run_agent(settings: AgentSettings, *, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGINT/SIGTERM (or cancellation), then shut down in order.

    The inputs stop first (statsd listener flushed, HTTP server stopped) while the node still
    runs, so requests in flight finish or reach their deadlines and nothing is accepted after the
    final snapshot; then the node leaves, snapshots and closes.
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
    udp: asyncio.DatagramTransport | None = None
    statsd_protocol: StatsdProtocol | None = None
    started = False
    try:
        if settings.statsd is not None:
            with _naming("--statsd", settings.statsd):
                udp, statsd_protocol = await loop.create_datagram_endpoint(
                    lambda: StatsdProtocol(node), local_addr=settings.statsd
                )
        if settings.http is not None:
            counters = {"raft": observer.counters}
            if exporter is not None:
                counters["export"] = exporter.all_counters
            app = build_app(
                node,
                counters=counters,
                mapper=settings.mapping,
                idle_ttl_ms=settings.metrics_idle_ttl_ms,
            )
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=10.0)
            await runner.setup()
            with _naming("--http", settings.http):
                await web.TCPSite(runner, settings.http[0], settings.http[1]).start()
        log_start(node, statsd=settings.statsd, http=settings.http, graphite=settings.graphite)
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
        if udp is not None:
            udp.close()
        if statsd_protocol is not None:
            statsd_protocol.flush()
        if runner is not None:
            await runner.cleanup()
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
