"""The real node code under a seeded nemesis: loss, duplication, reordering, delay, partitions,
and crashes (clean stop, kill, lost disk). After healing and a quiet period every node reports
exactly the acknowledged sums per key and window, and every window is final everywhere.

A failure names its seed; replay one with ``pytest -k 'seed_17'`` or the seed in the id.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from crdtstream.config import WindowConfig
from tests.node.engine_calls import windows, write
from tests.node.test_node_simulation import STEP_MS, Cluster
from transports.memory import FaultOptions

SEEDS = range(40)
WINDOW = WindowConfig(size_ms=5_000, allowed_lateness_ms=500, retention_windows=30)
"""Windows longer than a crash and restart, so writes before and after land in the same cells."""
KEYS = ("api.hits", "api.errors", "jobs.done")
LOSSY = FaultOptions(
    drop_probability=0.3,
    duplicate_probability=0.1,
    reorder_probability=0.2,
    reorder_delay_ms_max=40,
    delay_ms_min=0,
    delay_ms_max=20,
)


class Scenario:
    """One seeded run: random writes on random nodes, recorded once acknowledged."""

    def __init__(self, seed: int, root: Path) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        names = ["a", "b", "c", "d"][: self.rng.choice([3, 4])]
        # Rare snapshots: a killed node's disk is then well behind what it gossiped, which is
        # exactly when resuming its old replica slot would swallow its new writes.
        self.cluster = Cluster(seed, names, root, snapshot_interval_ms=60_000, window=WINDOW)
        self.root = root
        self.expected: dict[tuple[str, int], float] = {}
        self.log: list[str] = []

    def write_for(self, duration_ms: int) -> None:
        for _ in range(duration_ms // (STEP_MS * 5)):
            name = self.rng.choice(self.cluster.names)
            key = self.rng.choice(KEYS)
            amount = self.rng.randint(1, 9)
            if write(self.cluster.nodes[name], key, "add", amount).accepted == 1:
                start = self.cluster.clock.now_ms() // WINDOW.size_ms * WINDOW.size_ms
                cell = (key, start)
                self.expected[cell] = self.expected.get(cell, 0) + amount
            self.cluster.run(STEP_MS * 5)

    def partition(self) -> None:
        names = list(self.cluster.names)
        self.rng.shuffle(names)
        shape = self.rng.choice(["halves", "isolate", "none"])
        faults = LOSSY
        if shape == "halves":
            middle = len(names) // 2
            faults = LOSSY.partitioned(names[:middle], names[middle:])
        elif shape == "isolate":
            faults = LOSSY.isolated(names[0])
        self.log.append(f"partition {shape} {names}")
        self.cluster.network.set_faults(faults)

    def crash_and_restart(self) -> None:
        name = self.rng.choice(self.cluster.names)
        mode = self.rng.choice(["clean", "kill", "lost-disk"])
        self.log.append(f"crash {name} {mode}")
        node = self.cluster.nodes.pop(name)
        if mode == "clean":
            node.close()
        else:
            node.transport.close()  # no final snapshot, no clean mark
        if mode == "lost-disk":
            shutil.rmtree(self.root / name, ignore_errors=True)
        self.cluster.run(self.rng.choice([0, 200, 1_000]))
        self.cluster.start(name)

    def observed(self) -> dict[str, dict[tuple[str, int], float]]:
        views = {}
        for name, node in self.cluster.nodes.items():
            cells = {}
            for key in KEYS:
                for window in windows(node, key):
                    cells[(key, window.start_ms)] = float(str(window.value))
            views[name] = cells
        return views


@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed_{s}" for s in SEEDS])
def test_exact_sums_and_finality_after_faults(seed: int, tmp_path: Path) -> None:
    scenario = Scenario(seed, tmp_path)
    cluster = scenario.cluster
    cluster.network.set_faults(LOSSY)
    scenario.write_for(600)
    scenario.partition()
    scenario.write_for(800)
    cluster.network.set_faults(LOSSY)
    cluster.run(2_500)  # heal the partition; converge under loss before anyone crashes
    scenario.crash_and_restart()
    scenario.write_for(800)
    cluster.network.set_faults(FaultOptions())
    cluster.run(WINDOW.size_ms + 4_000)  # quiet until the last window closes everywhere
    context = f"seed={seed} events={scenario.log}"
    for name, cells in scenario.observed().items():
        assert cells == scenario.expected, f"{context} node={name}"
        for key in KEYS:
            assert all(w.final for w in windows(cluster.nodes[name], key)), f"{context} {name}"
