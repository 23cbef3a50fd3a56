"""metric_anomaly on lists of health-metric points, without Bytewax or ClickHouse."""

from __future__ import annotations

import random
import re

from orderwatch.detectors.health_metrics import MetricPoint
from orderwatch.detectors.metric_anomaly import MetricAnomaly

T0 = 1_771_776_000.0  # 2026-02-23 00:00 +08:00


def success_ratio(minutes: int, failure_at, seed: int = 1, per_minute: int = 1400):
    """A gateway's notifications and success ratio per minute, as `HealthMetrics` emits them."""
    rng = random.Random(seed)
    for m in range(minutes):
        p = failure_at(m)
        failed = sum(rng.random() < p for _ in range(per_minute))
        yield MetricPoint(T0 + 60 * m, "callback_notifications", "gateway", "alipay",
                          per_minute)
        yield MetricPoint(T0 + 60 * m, "callback_success_ratio", "gateway", "alipay",
                          1 - failed / per_minute)


def test_a_clean_day_raises_nothing():
    for seed in range(1, 6):
        assert MetricAnomaly().learn_many(success_ratio(1440, lambda m: 0.01, seed)) == []


def test_a_gateway_creeping_from_1_to_6_percent_fires_before_5_percent():
    # a clean day, then the failure rate climbs linearly from 1% to 6% over an hour
    day = 1440
    def rate(m: int) -> float:
        return 0.01 if m < day else min(0.06, 0.01 + 0.05 * (m - day) / 60)
    alerts = MetricAnomaly().learn_many(success_ratio(day + 90, rate))
    (first, *_) = [a for a in alerts if a.status == "firing"]
    minute = (first.starts_at - T0) / 60 - 1 - day
    assert minute >= 0 and rate(day + int(minute)) < 0.03, minute  # the fixed rule: > 5%
    assert first.labels == {"metric": "callback_success_ratio", "gateway": "alipay",
                            "series": 'callback_success_ratio{gateway="alipay"}'}
    observed, expected = map(float, re.search(r"= ([\d.]+), usually about ([\d.]+)",
                                              first.summary).groups())
    assert abs(expected - 0.99) < 0.002 and 0.94 < observed < expected


def test_it_resolves_after_calm_minutes_and_ignores_unwatched_series():
    detector = MetricAnomaly()
    points = list(success_ratio(600, lambda m: 0.01 if m < 400 or m > 405 else 0.2))
    alerts = detector.learn_many(points)
    assert [a.status for a in alerts] == ["firing", "resolved"]
    assert alerts[1].ends_at - alerts[0].starts_at <= 20 * 60
    other = MetricPoint(T0, "callback_failures", "gateway", "alipay", 1e9)
    assert detector.learn_one(other) == []
