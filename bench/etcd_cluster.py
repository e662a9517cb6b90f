"""An etcd cluster behind the same fault proxies as :class:`bench.cluster.Cluster`: the anchor of
``crdtstream bench modes``.

etcd names one peer URL per member, the same for every other member, so a proxy per directed
link cannot be given to each member as our agents are given theirs. Instead every member
advertises the port of a :class:`PeerRouter`; the router reads the head of the first HTTP
request on each connection, whose ``X-Server-From`` header names the sending member (etcd's peer
transport sets it on its streams, its pipeline and its snapshots), and hands the connection to
the :class:`~bench.cluster.LinkProxy` of that directed link, which shapes it and cuts it on
command. A member id is the first 8 bytes of SHA-1 over its peer URL and the cluster token, as
etcd computes it, so the routes are known before any member starts. A connection without the
header (version and health probes) goes straight to the member, closed after its one answer
(etcd's prober shares keep-alive connections with the Raft messages).

Clients reach each member directly (:class:`EtcdClient`, the v3 HTTP/JSON gateway with base64
keys and values), as a client next to each member would. Leaving the ``with`` block kills
every member and stops every router and proxy.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import struct
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from bench import processes
from bench.cluster import NODES_MAX, LinkProxy, LinkShape, ProxyHost

__all__ = ["TOKEN", "EtcdClient", "EtcdCluster", "PeerRouter", "member_id"]

TOKEN = "crdtstream-bench-modes"
HEAD_BYTES_MAX = 16_384
HEAD_TIMEOUT_S = 10.0
ETCD_FLAGS = ("--pre-vote",)
"""Pre-vote (the default from etcd 3.5 on, as in our Raft): a member cut off and healed does not
depose the leader with the terms it counted up alone."""


def member_id(peer_url: str, token: str = TOKEN) -> str:
    """The id etcd gives a member of a new cluster, as ``X-Server-From`` spells it (hex)."""
    digest = hashlib.sha1((peer_url + token).encode()).digest()
    return format(struct.unpack(">Q", digest[:8])[0], "x")


def _header(head: bytes, name: bytes) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        field_name, _, value = line.partition(b":")
        if field_name.strip().lower() == name:
            return value.strip().decode("ascii", "replace")
    return None


class PeerRouter:
    """Listens on a member's advertised peer port and passes each connection to the link proxy
    of its sender (``routes``: sender id -> proxy port), or to ``target_port`` when unknown."""

    def __init__(self, listen_port: int, target_port: int, routes: dict[str, int]) -> None:
        self.listen_port = listen_port
        self.target_port = target_port
        self.routes = routes
        self.unrouted = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen on 127.0.0.1:``listen_port``."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.listen_port)

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._open)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
            if len(head) > HEAD_BYTES_MAX:
                return
            sender = _header(head, b"x-server-from")
            port = self.routes.get(sender or "", self.target_port)
            if port == self.target_port:
                # etcd's prober shares its keep-alive connections with the pipeline of Raft
                # messages: a connection opened without a sender must not carry them later.
                self.unrouted += 1
                head = head[:-2] + b"Connection: close\r\n\r\n"
            upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", port)
            upstream.write(head)
            pumps = [
                asyncio.create_task(_pipe(reader, upstream)),
                asyncio.create_task(_pipe(upstream_reader, writer)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass  # the sender or the link went away: this connection ends, as a real one would
        except asyncio.CancelledError:
            pass  # the router is closing
        finally:
            self._open.discard(task)
            writer.transport.abort()
            if upstream is not None:
                upstream.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65_536):
            writer.write(data)
            await writer.drain()


class EtcdCluster:
    """``size`` etcd members (``n1``..) whose peer links cross shaped, cuttable proxies; a context
    manager with the fault methods of :class:`bench.cluster.Cluster` that the modes bench uses."""

    def __init__(
        self,
        root: Path,
        executable: str,
        size: int = 3,
        shape: LinkShape | None = None,
        seed: int = 1,
    ) -> None:
        if not 2 <= size <= NODES_MAX:
            raise ValueError(f"a cluster has 2 to {NODES_MAX} members, got {size}")
        self.root = root
        self.executable = executable
        self.size = size
        self.shape = shape or LinkShape()
        self.seed = seed
        self.members: list[processes.EtcdMember] = []
        self.links: dict[tuple[str, str], LinkProxy] = {}
        self.routers: list[PeerRouter] = []
        self._host: ProxyHost | None = None

    @property
    def names(self) -> list[str]:
        """The member names, ``n1`` to ``nN``."""
        return [f"n{index + 1}" for index in range(self.size)]

    def __enter__(self) -> EtcdCluster:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Kill every member, stop every router and proxy (idempotent)."""
        for member in self.members:
            member.kill()
        if self._host is not None:
            host, self._host = self._host, None

            async def close_routers() -> None:
                await asyncio.gather(*(r.close() for r in self.routers), return_exceptions=True)

            with contextlib.suppress(TimeoutError, RuntimeError):
                host.call(close_routers())
            host.close()

    def _start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        names = self.names
        client = {name: processes.free_port() for name in names}
        peer = {name: processes.free_port() for name in names}
        advertised = {name: processes.free_port() for name in names}
        urls = {name: f"http://127.0.0.1:{advertised[name]}" for name in names}
        ids = {name: member_id(urls[name]) for name in names}
        self._host = ProxyHost()
        pairs = [(s, t) for s in names for t in names if s != t]
        for index, (source, target) in enumerate(pairs):
            proxy = LinkProxy(
                f"{source}->{target}",
                processes.free_port(),
                peer[target],
                self.shape,
                self.seed + index,
            )
            self.links[(source, target)] = self._host.add(proxy)
        for target in names:
            routes = {ids[s]: self.links[(s, target)].listen_port for s in names if s != target}
            router = PeerRouter(advertised[target], peer[target], routes)
            self._host.call(router.start())
            self.routers.append(router)
        initial = ",".join(f"{name}={urls[name]}" for name in names)
        for name in names:
            member = processes.EtcdMember(
                name,
                client[name],
                peer[name],
                self.root / name,
                self.root / f"{name}.log",
                initial,
                self.executable,
                advertise_peer_port=advertised[name],
                token=TOKEN,
                extra_args=list(ETCD_FLAGS),
            )
            self.members.append(member)
        for member in self.members:
            member.start()
        for member in self.members:
            member.wait_ready(60.0)

    def client_urls(self) -> dict[str, str]:
        """Each member's client URL by name."""
        return {member.name: member.client_url for member in self.members}

    def partition(self, *groups: list[str]) -> None:
        """Cut every peer link (both directions) between members of different groups; members
        named in no group form one more group."""
        named = {name for group in groups for name in group}
        rest = [name for name in self.names if name not in named]
        side = {name: index for index, group in enumerate([*groups, rest]) for name in group}
        self._set([p for (s, t), p in self.links.items() if side[s] != side[t]], True)

    def heal(self) -> None:
        """Restore every peer link."""
        self._set(list(self.links.values()), False)

    def _set(self, proxies: list[LinkProxy], cut: bool) -> None:
        if self._host is None:
            raise RuntimeError("the etcd cluster is not running")
        self._host.set_cut(proxies, cut)

    def bytes_forwarded(self) -> int:
        """Peer bytes every proxy delivered so far."""
        return sum(proxy.bytes_forwarded for proxy in self.links.values())

    def wait_for_leader(self, deadline_s: float = 30.0) -> None:
        """Until every member is healthy again (etcd is healthy only with a leader)."""
        end = time.monotonic() + deadline_s
        for member in self.members:
            member.wait_ready(max(0.1, end - time.monotonic()))


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdClient:
    """A counter per key on etcd through the v3 JSON gateway, with the interface of the modes
    bench's own client: ``add`` (a linearizable read, then a transaction that puts the sum if
    the ``mod_revision`` is unchanged, retried on a conflict), ``write`` of ``add`` or
    ``conditional_add`` bodies (the limit checked on the value read, the transaction comparing
    the value), ``read`` (linearizable, or serializable for ``eventual``). Each call gives up
    after ``timeout_s``; never raises for a refused or unanswered request: None, as a refusal.
    """

    def __init__(self, urls: dict[str, str], timeout_s: float) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self.urls = urls
        self.timeout_s = timeout_s
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            connector=aiohttp.TCPConnector(limit=0),
        )

    async def close(self) -> None:
        await self.session.close()

    async def _post(self, node: str, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            async with self.session.post(f"{self.urls[node]}{path}", json=body) as answer:
                data = await answer.json() if answer.status == 200 else None
                return data if isinstance(data, dict) else None
        except (self._aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def _get(self, node: str, key: str, serializable: bool) -> tuple[int, int] | None:
        """The counter's value and ``mod_revision`` (0, 0 when absent), None when unanswered."""
        body: dict[str, Any] = {"key": _b64(key)}
        if serializable:
            body["serializable"] = True
        data = await self._post(node, "/v3/kv/range", body)
        if data is None:
            return None
        kvs = data.get("kvs") or []
        if not kvs:
            return 0, 0
        return int(base64.b64decode(kvs[0].get("value", ""))), int(kvs[0]["mod_revision"])

    async def _put_if(
        self, node: str, key: str, current: tuple[int, int], value: int, *, on_value: bool
    ) -> bool | None:
        """Put ``value`` if the key is unchanged since ``current`` was read: compared on its
        ``mod_revision``, or ``on_value`` on the value itself (on its absence when the read found
        none); whether it was put, None when unanswered."""
        old, revision = current
        if not on_value:
            compare = {"target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}
        elif revision == 0:
            compare = {"target": "CREATE", "result": "EQUAL", "create_revision": "0"}
        else:
            compare = {"target": "VALUE", "result": "EQUAL", "value": _b64(str(old))}
        body = {
            "compare": [{"key": _b64(key), **compare}],
            "success": [{"request_put": {"key": _b64(key), "value": _b64(str(value))}}],
        }
        data = await self._post(node, "/v3/kv/txn", body)
        return None if data is None else bool(data.get("succeeded", False))

    async def write(self, node: str, key: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Add ``body["value"]`` (1 by default); with ``op`` ``conditional_add`` only while the
        sum stays within ``limit``. Answers ``{"applied", "value"}`` as the agents do."""
        step = int(body.get("value", 1))
        limit = body.get("limit") if body.get("op") == "conditional_add" else None
        loop = asyncio.get_running_loop()
        end = loop.time() + self.timeout_s
        while loop.time() < end:
            current = await self._get(node, key, serializable=False)
            if current is None:
                return None
            value = current[0]
            if limit is not None and value + step > int(limit):
                return {"applied": False, "value": value}
            put = await self._put_if(node, key, current, value + step, on_value=limit is not None)
            if put is None:
                return None
            if put:
                return {"applied": True, "value": value + step}
        return None

    async def add(self, node: str, key: str) -> bool:
        return await self.write(node, key, {"op": "add", "value": 1}) is not None

    async def read(
        self, node: str, key: str, consistency: str | None = None, *, per_window: bool = False
    ) -> float | None:
        """The counter (0 when absent); serializable, from the member alone, for ``eventual``."""
        current = await self._get(node, key, serializable=consistency == "eventual")
        return None if current is None else float(current[0])
