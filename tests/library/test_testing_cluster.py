"""``crdtstream.testing.cluster``: replicas on the simulated network, with partitions."""

from __future__ import annotations

import asyncio

import pytest

import crdtstream
from crdtstream.engine import Answer
from crdtstream.errors import UnavailableError
from crdtstream.testing import Cluster
from crdtstream.watch import Change

POLICY = {"quota.*": "strong", "orders.*": "quorum"}


def _total(answer: Answer) -> float:
    return sum(float(str(window.value)) for window in answer.windows)


def test_a_partition_keeps_eventual_writes_and_refuses_a_minority_quorum() -> None:
    seed = 3

    async def main() -> None:
        with crdtstream.testing.cluster(3, seed=seed, policy=POLICY) as cluster:
            first, second, third = cluster
            cluster.run(1_000)
            cluster.isolate("n1")
            await first.add("hits", 1)  # eventual: kept on the minority side
            await second.add("hits", 2)
            await second.add("orders.eu", 1)  # quorum: n2 and n3 are a majority
            with pytest.raises(UnavailableError, match="quorum"):
                await first.add("orders.eu", 5)
            assert _total(await third.read("hits")) == 2.0, f"seed={seed}"
            cluster.heal()
            cluster.run(3_000)
            for replica in cluster:
                assert _total(await replica.read("hits")) == 3.0, f"seed={seed}"
                # The minority's write was kept on n1 and spread once healed.
                assert _total(await replica.read("orders.eu", consistency="quorum")) == 6.0

    asyncio.run(main())


def test_a_strong_limit_holds_across_nodes_and_a_minority_cannot_commit() -> None:
    seed = 5

    async def main() -> None:
        with crdtstream.testing.cluster(3, seed=seed, policy=POLICY) as cluster:
            cluster.run(2_000)
            calls = [r.conditional_add("quota.x", 1, limit=4) for r in [*cluster, *cluster]]
            answers = await asyncio.gather(*calls)
            assert sorted(a.applied for a in answers) == [False, False, True, True, True, True]
            cluster.isolate("n3")
            with pytest.raises(UnavailableError):
                await cluster["n3"].conditional_add("quota.y", 1, limit=4)

    asyncio.run(main())


def _trace(seed: int) -> list[object]:
    async def main() -> list[object]:
        with crdtstream.testing.cluster(3, seed=seed, policy=POLICY) as cluster:
            cluster.set_faults(drop_probability=0.2)
            await cluster[0].add("hits", 1)
            await cluster[1].add("orders.eu", 2)
            cluster.run(500)
            reads = [await replica.read("hits") for replica in cluster]
            return [cluster.clock.now_ms(), repr(cluster.network.stats()), reads]

    return asyncio.run(main())


def test_the_same_seed_gives_the_same_run() -> None:
    assert _trace(11) == _trace(11)


def test_waiting_requests_share_simulated_time() -> None:
    async def main() -> None:
        with crdtstream.testing.cluster(3, seed=2, policy=POLICY) as cluster:
            cluster.isolate("n1")
            start = cluster.clock.now_ms()
            calls = [cluster["n1"].add("orders.a", 1), cluster["n1"].add("orders.b", 1)]
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(r, UnavailableError) for r in results)
            # Both timed out together: one quorum timeout of simulated time, not two.
            quorum_timeout_ms = cluster.nodes["n1"].config.quorum_timeout_ms
            assert cluster.clock.now_ms() - start < 1.5 * quorum_timeout_ms

    asyncio.run(main())


def test_a_watch_on_one_node_sees_writes_made_on_another() -> None:
    async def main() -> None:
        with crdtstream.testing.cluster(2, seed=4) as cluster:
            watch = cluster["n2"].watch("hits")
            await cluster["n1"].add("hits", 7)
            event = await watch.__anext__()
            assert isinstance(event, Change)
            assert (event.key, event.value) == ("hits", 7.0)

    asyncio.run(main())


def test_bad_cluster_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Cluster(0)
    with pytest.raises(ValueError, match="unknown voters"):
        Cluster(2, policy=POLICY, voters=["n9"])
