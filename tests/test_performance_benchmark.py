"""benchmarks/performance.py: its latency figures, read from a real /metrics exposition,
and its open-orders file."""

from __future__ import annotations

from prometheus_client import generate_latest

from benchmarks.exposition import histogram
from benchmarks.performance import dataflow_tenths, open_orders_file, quantile
from orderwatch.config import Settings
from orderwatch.events import decode
from orderwatch.pipelines.order_shard import OrderShard, ShardInput
from orderwatch.pipelines.prometheus_export import Exporter, make_registry

from conftest import at, order_event


def test_latency_quantiles_come_from_the_exported_histogram_like_histogram_quantile():
    exporter = Exporter()
    for seconds in [0.02] * 50 + [0.3] * 40 + [1.8] * 9 + [120.0]:
        exporter.observe_seconds("orderwatch_alert_latency_seconds", ("callback_lost",),
                                 seconds)
    exporter.observe_seconds("orderwatch_alert_latency_seconds", ("duplicate_order",), 0.02)
    body = generate_latest(make_registry(exporter)).decode()
    cumulative = histogram(body, "orderwatch_alert_latency_seconds")
    assert cumulative[-1] == (float("inf"), 101.0)  # summed over both alerts
    assert dict(cumulative)[2.0] == 100.0
    # rank 50.5 of 101 falls in (0.01, 0.025], which holds the first 51
    assert quantile(0.5, cumulative) == round(0.01 + 0.015 * 50.5 / 51, 3)
    assert quantile(0.95, cumulative) == round(1.5 + 0.5 * (95.95 - 91) / 9, 3)
    assert quantile(1.0, cumulative) == 60.0  # beyond the last bound: that bound


def test_the_open_orders_file_is_quiet_traffic(tmp_path):
    """The memory benchmark's orders must stay open without alerting: alerts keep state
    of their own, which would be counted as memory per open order."""
    template = dict(order_event("T", 0, "create", "pending_payment",
                                client_created_at=at(-1.5)).data)
    path = tmp_path / "open.jsonl"
    open_orders_file(path, 2_000, template)
    shard = OrderShard(Settings())
    events = [decode(line) for line in path.read_bytes().splitlines()]
    out = shard.process(ShardInput("o0", events, "p", max(e.ts for e in events), True, 1))
    assert len(shard.book) == 2_000
    assert [a.alert for a in out.alerts] == []


def test_the_week_is_read_over_the_dataflow_not_the_final_merge():
    """Samples every half second of a 30 s replay: 2 s of start-up, 25 s of dataflow, a
    saw tooth between 600 and 680 MiB (2 s period), then 3 s of the tables' merge at
    900 MiB, which is not the pipeline's. Each tenth reads its peak, wherever the tooth."""
    def rss_at(t: float) -> int:
        return 100 if t < 2 else (680 if t % 2 == 0 else 600) if t < 27 else 900
    run = {"rss": [(t / 2, rss_at(t / 2) * 1024) for t in range(61)], "wall_s": 30.0,
           "flow_s": 28.0, "merge_s": 3.0}
    assert dataflow_tenths(run) == [680] * 10
