"""Lock waits in log-spaced buckets, and the p95 read from them; minutes that are final."""

from __future__ import annotations

import itertools
import math
import random

from orderwatch.detectors.health_metrics import MINUTE, HealthMetrics
from orderwatch.detectors.wait_histogram import BOUNDS_MS, WIDTH, bucket, quantile


def histogram(waits: list[float]) -> list[float]:
    counts = [0.0] * WIDTH
    for wait in waits:
        counts[bucket(wait)] += 1
    return counts


def test_buckets_hold_their_upper_bound_and_grow_by_half():
    assert [bucket(w) for w in (0.2, 1.5, 1.51, 2.2, 2.21)] == [0, 0, 1, 1, 2]
    assert bucket(BOUNDS_MS[-1] + 1) == len(BOUNDS_MS) == WIDTH - 1
    assert all(1.4 < b / a < 1.6 for a, b in itertools.pairwise(BOUNDS_MS))


def test_the_p95_is_interpolated_inside_its_bucket_like_histogram_quantile():
    # 90 waits in (5.1, 7.6], 10 in (17.1, 25.6]: rank 95 is halfway through the second
    counts = histogram([7.0] * 90 + [20.0] * 10)
    assert quantile(counts, 0.95) == 17.1 + (25.6 - 17.1) * (95 - 90) / 10
    assert quantile(histogram([0.5] * 4), 0.5) == 0.75  # the first bucket starts at 0
    assert quantile(histogram([8.0] * 90 + [60_000.0] * 10), 0.95) == math.inf
    assert math.isnan(quantile(histogram([]), 0.95))


def test_a_steady_wait_distribution_gives_a_steady_p95():
    """Stock-lock waits as the engine draws them (lognormal, median 15 ms, true p95
    47 ms), 700 a minute: each minute's p95 stays within sampling noise of 47. With
    buckets at 20, 50 and 100 ms it read 50 one minute and 100 the next (upper bounds),
    or 47 and 62 (interpolated), and metric_anomaly took the jumps for new levels."""
    rng = random.Random(4)
    p95s = [quantile(histogram([rng.lognormvariate(math.log(15), 0.7) for _ in range(700)]),
                     0.95) for _ in range(120)]
    assert min(p95s) > 42 and max(p95s) < 57


def test_events_for_a_minute_already_written_count_as_late_events_in_the_open_minute():
    """A burst replayed hours late (a backfill, a stalled partition) used to vanish from
    health_metrics: its minutes were final, so its cells were dropped without a trace."""
    metrics = HealthMetrics()
    order, callback = ("events", "stream", "order"), ("events", "stream", "callback")
    assert metrics.merge({(10, *order): [3.0]}) == {}
    assert [(p.bucket, p.metric, p.value) for p in metrics.close(12 * MINUTE)] == [
        (600.0, "events", 3.0)]
    late = metrics.merge({(10, *order): [2.0], (11, *callback): [1.0], (12, *order): [4.0],
                          (11, "orders_created", "channel", "web"): [1.0]})
    assert late == {"order": 2.0, "callback": 1.0}
    points = {(p.bucket // MINUTE, p.metric, p.dim_value): p.value
              for p in metrics.close(13 * MINUTE)}
    assert points == {(12, "events", "order"): 4.0, (12, "late_events", "order"): 2.0,
                      (12, "late_events", "callback"): 1.0}
    # a rare count: the quiet minutes after it are zeros, not gaps
    assert {(p.metric, p.dim_value, p.value) for p in metrics.close(14 * MINUTE)} == {
        ("late_events", "order", 0.0), ("late_events", "callback", 0.0)}
