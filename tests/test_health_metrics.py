"""The minute health metrics' derived values."""

from __future__ import annotations

import math
import random

from orderwatch.detectors.health_metrics import WAIT_BOUNDS_MS, quantile, wait_bucket


def histogram(waits: list[float]) -> list[float]:
    counts = [0.0] * (len(WAIT_BOUNDS_MS) + 1)
    for wait in waits:
        counts[wait_bucket(wait)] += 1
    return counts


def test_the_p95_is_interpolated_inside_its_bucket_like_histogram_quantile():
    # 90 waits in (5, 10], 10 in (20, 50]: rank 95 is halfway through the second bucket
    counts = histogram([8.0] * 90 + [30.0] * 10)
    assert quantile(counts, 0.95) == 20 + (50 - 20) * (95 - 90) / 10
    assert quantile(histogram([0.5] * 4), 0.5) == 0.5  # the first bucket starts at 0
    assert quantile(histogram([8.0] * 90 + [60_000.0] * 10), 0.95) == math.inf
    assert math.isnan(quantile(histogram([]), 0.95))


def test_a_steady_wait_distribution_gives_a_steady_p95():
    """Stock-lock waits as the engine draws them (lognormal, median 15 ms, true p95
    47 ms), 700 a minute: each minute's p95 stays near 47 (within what linear
    interpolation inside the bucket (50, 100] allows), not 50 one minute and 100 the
    next."""
    rng = random.Random(4)
    p95s = [quantile(histogram([rng.lognormvariate(math.log(15), 0.7) for _ in range(700)]),
                     0.95) for _ in range(120)]
    assert min(p95s) > 45 and max(p95s) < 65
