"""``crdtstream.open_sync``: the replica of :func:`crdtstream.open` for programs without an event
loop, run in a loop of its own in a background thread; every method blocks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Generator, Iterable, Mapping
from collections.abc import Sequence as SequenceABC
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from crdtstream.config import PolicyRule
from crdtstream.engine import Answer
from crdtstream.errors import UnavailableError
from crdtstream.replica import Replica, Value, Watch, open
from crdtstream.watch import WatchEvent

__all__ = ["SyncReplica", "open_sync"]

SYNC_CALL_TIMEOUT_S = 60.0
"""How long a synchronous call waits for its answer (the engine's own deadlines come first)."""

T = TypeVar("T")


class SyncReplica:
    """:func:`open`, for programs without an event loop: the replica runs in a loop of its own
    in a background thread, and every method blocks until its answer (see :func:`open_sync`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="crdtstream-replica", daemon=True
        )
        self._thread.start()
        self._context = open(*args, **kwargs)
        try:
            self.replica: Replica = self._call(self._context.__aenter__())
        except BaseException:
            self._stop_loop()
            raise
        self._closed = False

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        if self._loop.is_closed():
            coroutine.close()
            raise UnavailableError("the replica is closed")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(SYNC_CALL_TIMEOUT_S if timeout_s is None else timeout_s)
        except TimeoutError:
            future.cancel()  # the call must not complete later, behind the caller's back
            raise

    @property
    def node_id(self) -> str:
        """This node's id."""
        return self.replica.node_id

    def write(self, key: str, op: str, value: Value, **options: Any) -> Answer:
        """:meth:`Replica.write`, blocking."""
        return self._call(self.replica.write(key, op, value, **options))

    def add(self, key: str, amount: float = 1, **options: Any) -> Answer:
        """:meth:`Replica.add`, blocking."""
        return self._call(self.replica.add(key, amount, **options))

    def set(self, key: str, value: float, **options: Any) -> Answer:
        """:meth:`Replica.set`, blocking."""
        return self._call(self.replica.set(key, value, **options))

    def observe(self, key: str, value: float, **options: Any) -> Answer:
        """:meth:`Replica.observe`, blocking."""
        return self._call(self.replica.observe(key, value, **options))

    def set_add(self, key: str, item: str | bytes, **options: Any) -> Answer:
        """:meth:`Replica.set_add`, blocking."""
        return self._call(self.replica.set_add(key, item, **options))

    def set_remove(self, key: str, item: str | bytes, **options: Any) -> Answer:
        """:meth:`Replica.set_remove`, blocking."""
        return self._call(self.replica.set_remove(key, item, **options))

    def conditional_add(self, key: str, amount: float, *, limit: float, **options: Any) -> Answer:
        """:meth:`Replica.conditional_add`, blocking."""
        return self._call(self.replica.conditional_add(key, amount, limit=limit, **options))

    def read(self, key: str, *, consistency: str | None = None) -> Answer:
        """:meth:`Replica.read`, blocking."""
        return self._call(self.replica.read(key, consistency=consistency))

    def watch(
        self, pattern: str = "*", since: int | None = None, *, timeout_s: float | None = None
    ) -> Generator[WatchEvent, None, None]:
        """:meth:`Replica.watch` as a blocking iterator; each step waits at most ``timeout_s``
        (None: until an event), raising :class:`TimeoutError` after it. Closing the generator
        ends the watch."""

        async def start() -> Watch:
            return self.replica.watch(pattern, since)

        watch = self._call(start())
        try:
            while True:
                try:
                    yield self._call(watch.__anext__(), timeout_s or 10**9)
                except StopAsyncIteration:
                    return
        finally:
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(watch.close)

    def status(self) -> dict[str, object]:
        """:meth:`Replica.status`."""
        return self._call(_returning(self.replica.status))

    def close(self) -> None:
        """Close the replica (as leaving the ``async with`` block of :func:`open`), then stop
        the background loop and join its thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._context.__aexit__(None, None, None))
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncReplica:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


async def _returning(function: Callable[[], T]) -> T:
    return function()


def open_sync(
    node_id: str,
    listen: str = "tcp://127.0.0.1:7001",
    peers: SequenceABC[str] = (),
    data_dir: str | Path | None = None,
    policy: Mapping[str, str] | Iterable[PolicyRule] | None = None,
    **options: Any,
) -> SyncReplica:
    """Open a replica for a program without an event loop: the arguments of :func:`open`;
    returns it opened, to use in a ``with`` block or to :meth:`~SyncReplica.close`."""
    return SyncReplica(node_id, listen, peers, data_dir, policy, **options)
