"""Shard names spread evenly over a cluster's workers, as Bytewax itself routes them."""

from __future__ import annotations

import json
import threading
from collections import Counter

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.recovery import init_db_dir
from bytewax.testing import TestingSource, cluster_main

from orderwatch.pipelines.placement import (
    aggregate_shard_names,
    bytewax_worker,
    order_shard_names,
)
from orderwatch.pipelines.runner import Recovery


class _WorkerOfKey(DynamicSink):
    """Records which worker each key's stateful step ran on: a dynamic sink's partition
    writes what its own worker emits."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        self.lock = threading.Lock()

    def build(self, step_id: str, worker_index: int, worker_count: int
              ) -> StatelessSinkPartition:
        sink = self

        class _Part(StatelessSinkPartition):
            def write_batch(self, items: list) -> None:
                with sink.lock:
                    sink.seen.update((key, worker_index) for key, _ in items)
        return _Part()


def _routed_by_bytewax(keys: list[str], workers: int) -> dict[str, int]:
    flow = Dataflow("placement")
    keyed = op.key_on("key", op.input("in", flow, TestingSource(keys)), lambda k: k)
    counted = op.stateful_map("count", keyed, lambda n, _: ((n or 0) + 1, n))
    sink = _WorkerOfKey()
    op.output("out", counted, sink)
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return sink.seen


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_bytewax_routes_each_key_to_the_worker_placement_computes(workers):
    keys = sorted({*order_shard_names(16, workers), *aggregate_shard_names(4, workers),
                   *(f"{i:03d}" for i in range(64)), "shard", "é-ü", "x" * 40})
    assert _routed_by_bytewax(keys, workers) == {k: bytewax_worker(k, workers) for k in keys}


def test_the_plain_names_land_9_and_7_on_two_workers_the_placed_ones_8_and_8():
    plain = Counter(bytewax_worker(f"{i:03d}", 2) for i in range(16))
    assert sorted(plain.values()) == [7, 9]  # what the shards had before placement
    for workers in (2, 3, 4, 5):
        names = order_shard_names(16, workers)
        on = Counter(bytewax_worker(name, workers) for name in names)
        assert sorted(on) == list(range(workers))
        assert max(on.values()) - min(on.values()) <= 1, (workers, on)
        assert [name[:3] for name in names] == [f"{i:03d}" for i in range(16)]


def test_aggregate_shards_keep_off_worker_0_which_writes_clickhouse():
    assert {bytewax_worker(n, 2) for n in aggregate_shard_names(4, 2)} == {1}
    assert Counter(bytewax_worker(n, 3) for n in aggregate_shard_names(4, 3)) == {1: 2, 2: 2}
    assert Counter(bytewax_worker(n, 5) for n in aggregate_shard_names(4, 5)) == \
        {1: 1, 2: 1, 3: 1, 4: 1}


def test_one_worker_keeps_the_plain_names():
    """A single worker's names are those of snapshots from before placement."""
    assert order_shard_names(16) == [f"{i:03d}" for i in range(16)]
    assert aggregate_shard_names(4, 1) == ["000", "001", "002", "003"]


def test_a_recovery_directory_keeps_the_placement_it_started_with(tmp_path):
    """Each snapshot is kept under its shard's name, so a resume with another worker
    count must keep the names; a directory from before placement has the plain ones."""
    recovery = Recovery(tmp_path / "recovery")
    assert recovery.shard_placement(1) == 1
    assert recovery.shard_placement(2) == 2  # nothing to resume yet: this run sets it
    init_db_dir(recovery.directory, Recovery.PARTITIONS)
    assert recovery.shard_placement(4) == 2

    older = Recovery(tmp_path / "older")
    older.directory.mkdir()
    init_db_dir(older.directory, Recovery.PARTITIONS)
    (older.directory / Recovery.LAYOUT).write_text(
        json.dumps({"stripes": 2, "files": ["a.jsonl"]}) + "\n")
    assert older.shard_placement(2) == 1
    assert older.replay_layout(["a.jsonl"], 4, 500) == (2, 500)
    (older.directory / Recovery.LAYOUT).write_text('{"placement": "two"}\n')
    assert older.shard_placement(2) == 1
