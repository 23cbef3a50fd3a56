"""metric_anomaly on lists of health-metric points, without Bytewax or ClickHouse."""

from __future__ import annotations

import random
import re

from orderwatch.detectors.health_metrics import HealthMetrics, MetricPoint, Partials
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
    assert first.summary_zh.startswith(f"{first.labels['series']} = {observed:.4g}，通常约 ")


def test_it_resolves_after_calm_minutes_and_ignores_unwatched_series():
    detector = MetricAnomaly()
    points = list(success_ratio(600, lambda m: 0.01 if m < 400 or m > 405 else 0.2))
    alerts = detector.learn_many(points)
    assert [a.status for a in alerts] == ["firing", "resolved"]
    assert alerts[1].ends_at - alerts[0].starts_at <= 20 * 60
    other = MetricPoint(T0, "callback_failures", "gateway", "alipay", 1e9)
    assert detector.learn_one(other) == []


def shipments(minutes: int, mean_at, seed: int = 1):
    """A carrier's shipments per minute: Poisson counts around `mean_at(minute)`."""
    rng = random.Random(seed)
    for m in range(minutes):
        mean, count, t = mean_at(m), 0, rng.expovariate(1.0)
        while t < mean:  # Poisson by exponential gaps
            count += 1
            t += rng.expovariate(1.0)
        yield MetricPoint(T0 + 60 * m, "shipments", "carrier", "SF", count)


def test_a_series_still_ramping_up_learns_until_it_settles_then_monitors():
    # a pipeline started on an empty shop: shipments climb for 8 hours, then hold;
    # the next day they halve for an hour (a warehouse stops)
    def mean(m: int) -> float:
        level = 40 * min(1.0, m / 480)
        return level / 2 if 2400 <= m < 2460 else level
    for seed in (1, 2, 3):
        alerts = MetricAnomaly().learn_many(shipments(2600, mean, seed))
        firing = [round((a.starts_at - T0) / 60) for a in alerts if a.status == "firing"]
        assert firing, f"seed {seed}: the halving went unseen"
        assert 2400 <= firing[0] <= 2430, f"seed {seed}: fired at minutes {firing}"


def test_rare_counts_are_zero_filled_once_seen():
    metrics = HealthMetrics()
    for minute, reason in ((10, "not_json"), (12, "not_json"), (20, "bad_timestamp_in")):
        cells = Partials()
        cells.count(T0 + 60 * minute + 5, "dead_letters", "reason", reason)
        metrics.merge(cells.cells)
    first = metrics.close(T0 + 60 * 15)  # minutes 10–14 are complete
    assert [(p.bucket, p.dim_value, p.value) for p in first] == [
        (T0 + 60 * m, "not_json", 1.0 if m in (10, 12) else 0.0) for m in range(10, 15)]
    later = metrics.close(T0 + 60 * 22)  # the second reason starts at its first minute
    assert sorted((p.bucket, p.dim_value, p.value) for p in later) == sorted(
        [(T0 + 60 * m, "not_json", 0.0) for m in range(15, 22)]
        + [(T0 + 60 * 20, "bad_timestamp_in", 1.0), (T0 + 60 * 21, "bad_timestamp_in", 0.0)])


def test_a_burst_of_dead_letters_fires_on_a_quiet_rare_series():
    rng = random.Random(4)
    points = [MetricPoint(T0 + 60 * m, "dead_letters", "reason", "not_json",
                          float(40 if 600 <= m < 605 else rng.random() < 0.02))
              for m in range(700)]
    alerts = MetricAnomaly().learn_many(points)
    assert [a.status for a in alerts] == ["firing", "resolved"]
    assert T0 + 60 * 600 < alerts[0].starts_at <= T0 + 60 * 605  # within the burst
    assert alerts[0].labels["reason"] == "not_json"
