"""Free-text dimensions (gateway, channel, warehouse) with ids in them stay bounded.

A feed that gave every order its own channel made every order a Prometheus series, an
anomaly chart and, for duplicates, a series zero-filled every minute, none of which ever
left: memory and per-minute work grew with the orders ever seen.
"""

from __future__ import annotations

import contextlib
import logging
import pickle

from prometheus_client import generate_latest
from test_watermark_and_order_book import drained

from orderwatch.config import PipelineSettings, Settings
from orderwatch.detectors.channel_degraded import ChannelDegraded
from orderwatch.detectors.health_metrics import HealthMetrics, MetricPoint
from orderwatch.detectors.metric_anomaly import MetricAnomaly
from orderwatch.engine.faults import parse_fault_list
from orderwatch.engine.simulator import SimConfig, simulate
from orderwatch.events import InvalidEvent, validate
from orderwatch.pipelines.aggregate_shard import AggregateShard
from orderwatch.pipelines.order_shard import OrderShard
from orderwatch.pipelines.prometheus_export import Exporter, make_registry

from conftest import T0


def exposition(exporter: Exporter) -> str:
    return generate_latest(make_registry(exporter)).decode()


def test_metrics_beyond_the_limit_go_to_other_and_are_counted(caplog):
    exporter = Exporter(max_series=3)
    with caplog.at_level(logging.WARNING):
        for k in range(5):
            exporter.inc("orderwatch_orders_created", (f"ch{k}",), 2.0)
            exporter.observe_seconds("orderwatch_lock_wait_seconds", (f"lf{k}",), 0.01)
            exporter.set("orderwatch_callback_success_ratio", (f"gw{k}",), 0.5 + k / 10)
        exporter.inc("orderwatch_orders_created", ("ch1",), 1.0)  # a kept value stays itself
    text = exposition(exporter)
    assert 'orderwatch_orders_created_total{channel="ch1"} 3.0' in text
    assert 'orderwatch_orders_created_total{channel="other"} 4.0' in text  # ch3 and ch4
    assert 'channel="ch3"' not in text
    assert 'orderwatch_lock_wait_seconds_count{lock_family="other"} 2.0' in text
    assert 'gw3' not in text and 'gw4' not in text and 'gateway="other"' not in text
    for metric in ("orderwatch_orders_created", "orderwatch_lock_wait_seconds",
                   "orderwatch_callback_success_ratio"):
        assert f'orderwatch_series_folded_total{{metric="{metric}"}} 2.0' in text
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3 and "ORDERWATCH_PIPELINE_MAX_SERIES_PER_DIMENSION" in warnings[0]


def points(values: list[str], minutes: int, metric: str = "orders_created") -> list:
    return [MetricPoint(T0 + m * 60, metric, "channel", v, 3.0)
            for m in range(minutes) for v in values]


def test_metric_anomaly_watches_at_most_the_limit_of_one_dimension():
    detector = MetricAnomaly(max_series_per_dimension=2)
    detector.learn_many(points(["a", "b", "c", "d"], 3))
    detector.learn_many([MetricPoint(T0, "orders_created", "gateway", "alipay", 1.0)])
    assert sorted(detector.series) == [("orders_created", "channel", "a"),
                                       ("orders_created", "channel", "b"),
                                       ("orders_created", "gateway", "alipay")]
    assert detector.limit.refused == {"channel": 6}


def test_metric_anomaly_from_a_snapshot_before_the_limit_keeps_its_series():
    detector = MetricAnomaly()
    detector.learn_many(points(["a", "b"], 2))
    del detector.limit  # as pickled by an older version: the class default, None
    loaded = pickle.loads(pickle.dumps(detector))
    loaded.learn_many(points(["a", "c"], 1))
    assert loaded.limit is not None and loaded.limit.values == {"channel": {"a", "b", "c"}}


def test_only_the_limit_of_rare_series_are_zero_filled():
    metrics = HealthMetrics(max_series_per_dimension=2)
    metrics.merge({(int(T0 // 60), "duplicate_ship_requests", "warehouse", w): [1.0]
                   for w in ("W1", "W2", "W3")})
    metrics.close(T0 + 60)
    later = metrics.close(T0 + 10 * 60)
    filled = {p.dim_value for p in later if p.metric == "duplicate_ship_requests"}
    assert filled == {"W1", "W2"} and len(later) == 2 * 9  # nine quiet minutes each


def test_a_channel_per_order_leaves_the_aggregate_state_bounded():
    """Through the shards as the dataflow runs them: 600 orders, each its own channel
    and gateway; the limit of 50 holds in each aggregate shard, and every event is
    still counted in the health series."""
    settings = Settings(pipeline=PipelineSettings(order_shards=1, aggregate_shards=1,
                                                  max_series_per_dimension=50))
    events = []

    def keep(data: dict) -> None:
        for name in ("channel", "gateway"):
            if isinstance(data.get(name), str):
                data[name] = f"{name}-{data['order_no']}"
        with contextlib.suppress(InvalidEvent):  # the malformed events of the scenario
            events.append(validate(data))

    simulate(SimConfig(seed=3, orders=600, faults=parse_fault_list("all")), keep)
    inputs = drained([events[i:i + 500] for i in range(0, len(events), 500)])
    shard, aggregate = OrderShard(settings, "000"), AggregateShard(settings, "000")
    counted: dict[tuple[float, str], float] = {}
    for inp in inputs:
        out = shard.process(inp)
        for _, to_aggregate in out.to_aggregates:
            for p in aggregate.process(to_aggregate).points:
                if p.metric == "events":
                    counted[(p.bucket, p.dim_value)] = p.value  # a rewritten minute replaces
    per_dimension = {}
    for _, dimension, value in aggregate.anomaly.series:
        per_dimension.setdefault(dimension, set()).add(value)
    assert {d: len(v) for d, v in per_dimension.items()
            if d in ("channel", "gateway")} == {"channel": 50, "gateway": 50}
    assert aggregate.anomaly.limit.refused["channel"] > 0
    fresh = len({e.event_id for e in events})
    assert fresh > 5000 and sum(counted.values()) == fresh


def test_channel_streaks_are_kept_for_at_most_the_limit_of_channels():
    detector = ChannelDegraded(max_series_per_dimension=3)
    for k in range(10):
        detector.learn_one((T0 + k, f"ORD{k}", True), f"store-{k}")
    assert sorted(detector._recent) == ["store-0", "store-1", "store-2"]
    del detector.limit  # a snapshot from before the limit: its channels are counted in
    detector.learn_one((T0 + 20, "ORD20", True), "new")
    assert detector.limit.values == {"channel": {"store-0", "store-1", "store-2", "new"}}
