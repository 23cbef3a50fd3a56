"""Lock waits as a histogram of log-spaced buckets, and the quantiles read from one.

Buckets grow by half each (1.5 ms, 2.25 ms, … 37.9 s), so a quantile interpolated inside
its bucket is within a few percent of the true one at any scale. Coarse buckets would
not do for a series watched minute by minute: with bounds at 20, 50 and 100 ms, a
steady p95 of 47 ms reads 47 one minute and 62 the next, and `metric_anomaly` sees a
level it has never seen.
"""

from __future__ import annotations

import math
from bisect import bisect_left

BOUNDS_MS = tuple(round(1.5 ** i, 1) for i in range(1, 27))  # 1.5 ms … 37.9 s
WIDTH = len(BOUNDS_MS) + 1  # the last bucket holds what is beyond the last bound


def bucket(wait_ms: float) -> int:
    """The index of the bucket holding `wait_ms` (upper bounds inclusive)."""
    return bisect_left(BOUNDS_MS, wait_ms)


def quantile(counts: list[float], q: float) -> float:
    """The q-quantile (ms) of bucket counts, interpolated linearly inside its bucket as
    Prometheus's histogram_quantile does; nan when empty, inf beyond the last bound."""
    total = sum(counts)
    if not total:
        return math.nan
    rank = q * total
    seen = 0.0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i >= len(BOUNDS_MS):
                return math.inf
            lower = BOUNDS_MS[i - 1] if i else 0.0
            return lower + (BOUNDS_MS[i] - lower) * (rank - seen) / count
        seen += count
    return math.inf
