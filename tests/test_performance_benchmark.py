"""The latency figures of benchmarks/performance.py, read from a real /metrics exposition."""

from __future__ import annotations

from prometheus_client import generate_latest

from benchmarks.performance import histogram, quantile
from orderwatch.pipelines.prometheus_export import Exporter, make_registry


def test_latency_quantiles_come_from_the_exported_histogram_like_histogram_quantile():
    exporter = Exporter()
    for seconds in [0.02] * 50 + [0.3] * 40 + [1.8] * 9 + [120.0]:
        exporter.observe_latency("callback_lost", seconds)
    exporter.observe_latency("duplicate_order", 0.02)
    body = generate_latest(make_registry(exporter)).decode()
    cumulative = histogram(body, "orderwatch_alert_latency_seconds")
    assert cumulative[-1] == (float("inf"), 101.0)  # summed over both alerts
    assert dict(cumulative)[2.0] == 100.0
    # rank 50.5 of 101 falls in (0.01, 0.025], which holds the first 51
    assert quantile(0.5, cumulative) == round(0.01 + 0.015 * 50.5 / 51, 3)
    assert quantile(0.95, cumulative) == round(1.5 + 0.5 * (95.95 - 91) / 9, 3)
    assert quantile(1.0, cumulative) == 60.0  # beyond the last bound: that bound
