"""``crdtstream.open`` and ``open_sync``: real replicas over ZeroMQ on 127.0.0.1, in one
process (every replica is closed when its block ends, also on failure)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import crdtstream
from crdtstream.config import GossipConfig, MembershipConfig
from crdtstream.errors import ConfigError, RefusedError, UnavailableError
from crdtstream.watch import Change, Reset
from tests.library.addresses import free_tcp_address

pytestmark = [pytest.mark.timeout(60)]

FAST: dict[str, Any] = {"gossip": GossipConfig.local(), "membership": MembershipConfig.local()}


async def _eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


def test_two_replicas_share_a_counter_and_a_set() -> None:
    async def main() -> None:
        first_address, second_address = free_tcp_address(), free_tcp_address()
        async with (
            crdtstream.open("edge-1", first_address, **FAST) as first,
            crdtstream.open("edge-2", second_address, peers=[first_address], **FAST) as second,
        ):
            assert (await first.add("hits", 2)).accepted == 1
            await second.add("hits", 3)
            await second.set_add("users", "alice")

            async def converged() -> bool:
                hits = await first.read("hits")
                users = await first.read("users")
                total = sum(float(str(w.value)) for w in hits.windows)
                return total == 5.0 and any(w.value == {"alice"} for w in users.windows)

            assert await _eventually(converged)
            # With both nodes up, a quorum read is answered by a majority.
            answer = await second.read("hits", consistency="quorum")
            assert answer.consistency == "quorum"
            assert sum(float(str(w.value)) for w in answer.windows) == 5.0

    asyncio.run(main())


def test_a_lone_node_with_strong_keys_is_its_own_raft_voter() -> None:
    async def main() -> None:
        async with crdtstream.open(
            "solo", free_tcp_address(), policy={"quota.*": "strong"}
        ) as replica:
            # One event time for the three: a limit holds per window, and the wall clock may
            # cross a window boundary between two requests.
            stamp = replica.node.clock.now_ms()
            answers = [
                await replica.conditional_add("quota.x", 1, limit=2, timestamp_ms=stamp)
                for _ in range(3)
            ]
            assert [a.applied for a in answers] == [True, True, False]
            assert answers[-1].value == 2
            read = await replica.read("quota.x", consistency="strong")
            assert [w.value for w in read.windows] == [2]
            with pytest.raises(RefusedError, match="strong"):
                await replica.conditional_add("hits", 1, limit=5)

    asyncio.run(main())


def test_strong_keys_without_voters_are_refused_with_the_reason() -> None:
    async def main() -> None:
        async with crdtstream.open(
            "edge-1", free_tcp_address(), peers=[free_tcp_address()], policy={"quota.*": "strong"}
        ) as replica:
            with pytest.raises(RefusedError, match="no Raft voters"):
                await replica.conditional_add("quota.x", 1, limit=100)

    asyncio.run(main())


def test_bad_arguments_are_config_errors() -> None:
    async def main() -> None:
        with pytest.raises(ConfigError, match="peers"):
            async with crdtstream.open("edge-1", free_tcp_address(), peers="tcp://x:1"):
                pass
        with pytest.raises(ConfigError, match="voters"):
            async with crdtstream.open("edge-1", free_tcp_address(), voters=["edge-2"]):
                pass

    asyncio.run(main())


def test_a_watch_sees_a_live_replica_change() -> None:
    async def main() -> None:
        async with crdtstream.open("solo", free_tcp_address(), watch_interval_ms=20) as replica:
            watch = replica.watch("hits*")
            await replica.add("hits", 4)
            event = await asyncio.wait_for(watch.__anext__(), 10)
            assert isinstance(event, Change)
            assert (event.key, event.value, event.mode) == ("hits", 4.0, "eventual")
            resumed = replica.watch("hits*", since=0)
            first = await asyncio.wait_for(resumed.__anext__(), 10)
            assert isinstance(first, Change | Reset)
            watch.close()
            with pytest.raises(StopAsyncIteration):
                await watch.__anext__()

    asyncio.run(main())


def test_the_synchronous_facade_blocks_and_shuts_its_thread_down() -> None:
    before = set(threading.enumerate())
    with crdtstream.open_sync("solo", free_tcp_address(), watch_interval_ms=20) as replica:
        assert replica.add("hits", 2).accepted == 1
        replica.add("hits", 3)
        assert [w.value for w in replica.read("hits").windows] == [5.0]
        events = replica.watch("hits", since=0, timeout_s=10)
        first = next(events)
        assert isinstance(first, Change | Reset)
        events.close()
        with pytest.raises(TimeoutError):
            next(replica.watch("nothing", timeout_s=0.2))
    leftover = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert [t.name for t in leftover if t.name == "crdtstream-replica"] == []
    with pytest.raises(UnavailableError, match="closed"):
        replica.add("hits", 1)
