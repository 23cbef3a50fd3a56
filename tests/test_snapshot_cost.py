"""What recovery snapshots cost: each shard's pickling on /metrics, and one warning when
snapshots take more than half of the wall clock (`pipelines/snapshot_cost.py`)."""

from __future__ import annotations

import logging

from prometheus_client import generate_latest

from orderwatch.pipelines.prometheus_export import Exporter, make_registry
from orderwatch.pipelines.snapshot_cost import SnapshotCost


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_shard_snapshot_is_observed_and_the_latest_sizes_are_summed():
    exporter, clock = Exporter(), Clock()
    cost = SnapshotCost(exporter, 10.0, clock)
    cost.record("orders", "o1", 0.02, 1000)
    cost.record("orders", "o2", 0.3, 5000)
    cost.record("aggregates", "a1", 0.002, 200)
    cost.record("orders", "o1", 0.04, 3000)  # its next snapshot replaces its size
    text = generate_latest(make_registry(exporter)).decode()
    assert 'orderwatch_snapshot_seconds_count{step="orders"} 3.0' in text
    assert 'orderwatch_snapshot_seconds_bucket{le="0.05",step="orders"} 2.0' in text
    assert 'orderwatch_snapshot_seconds_count{step="aggregates"} 1.0' in text
    assert "orderwatch_snapshot_bytes 8200.0" in text
    count, seconds = exporter.histogram_totals("orderwatch_snapshot_seconds")
    assert (count, round(seconds, 6)) == (4, 0.362)


def test_a_warning_says_once_when_snapshots_take_most_of_a_minute(caplog):
    exporter, clock = Exporter(), Clock()
    exporter.set_per_shard("orderwatch_open_orders", "o1", 1_000_000)
    cost = SnapshotCost(exporter, 10.0, clock)
    with caplog.at_level(logging.WARNING, "orderwatch.pipelines.snapshot_cost"):
        for _ in range(6):  # a minute with 25 s of snapshots: no warning
            clock.now += 10
            cost.record("orders", "o1", 25 / 6, 10)
        assert caplog.records == []
        for _ in range(12):  # two minutes with 40 s of snapshots each: one warning
            clock.now += 10
            cost.record("orders", "o1", 40 / 6, 10)
    assert len(caplog.records) == 1, caplog.records
    message = caplog.records[0].getMessage()
    assert message.startswith("recovery snapshots every 10 s took 67% of the last 60 s "
                              "(pickling the state of 1,000,000 open orders)")
    assert "--snapshot-interval" in message
